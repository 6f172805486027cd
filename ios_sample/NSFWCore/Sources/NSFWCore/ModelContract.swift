/// What the app expects of the Core ML model that `nsfw-mobile convert` writes.
///
/// A CI test on Linux reads these literals from this file and compares them with
/// the committed `models/NSFW.mlmodel`, so renaming either side breaks the build.
/// The classes themselves are not listed here: the app reads them, and which of
/// them count as NSFW, from the model (`ModelLabels`), so a model trained on
/// other classes works without code changes.
public enum ModelContract {
    /// The image input: RGB, pixels scaled by 1/255 inside the model.
    public static let inputName = "image"
    /// The classifier's top label (a string).
    public static let labelOutput = "classLabel"
    /// The classifier's probabilities (a dictionary label -> probability).
    public static let probabilitiesOutput = "classLabelProbs"
    /// The user-defined metadata key that lists the NSFW labels, as a JSON array.
    public static let nsfwLabelsKey = "nsfw_labels"
}
