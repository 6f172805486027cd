/// What the app expects of the Core ML model that `nsfw-mobile convert` writes.
///
/// A CI test on Linux reads these literals from this file and compares them with
/// the committed `models/NSFW.mlmodel`, so renaming either side breaks the build.
public enum ModelContract {
    /// The image input: RGB, 224x224, pixels scaled by 1/255 inside the model.
    public static let inputName = "image"
    /// The classifier's top label (a string).
    public static let labelOutput = "classLabel"
    /// The classifier's probabilities (a dictionary label -> probability).
    public static let probabilitiesOutput = "classLabelProbs"
    /// The classes, in the model's output order.
    public static let labels = ["Neutral", "Porn", "Sexy"]
    /// Classes whose probabilities add up to the NSFW score.
    public static let nsfwLabels = ["Porn", "Sexy"]
}
