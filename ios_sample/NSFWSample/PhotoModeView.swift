import NSFWCore
import PhotosUI
import SwiftUI

/// Pick a photo, classify it, and blur it when its NSFW score is above the threshold.
struct PhotoModeView: View {
    let classifier: NSFWClassifier

    @State private var selection: PhotosPickerItem?
    @State private var image: UIImage?
    @State private var result: Classification?
    @State private var errorMessage: String?
    @State private var threshold = Threshold()

    var body: some View {
        NavigationStack {
            VStack(spacing: 16) {
                if let image {
                    Image(uiImage: image)
                        .resizable()
                        .scaledToFit()
                        .blur(radius: shouldBlur ? 30 : 0)
                        .clipShape(RoundedRectangle(cornerRadius: 12))
                } else {
                    ContentUnavailableHint()
                }
                if let result {
                    ScoresView(classification: result)
                }
                if let errorMessage {
                    Text(errorMessage).foregroundStyle(.red).font(.footnote)
                }
                VStack(alignment: .leading) {
                    Text("Blur above NSFW score \(threshold.value, specifier: "%.2f")")
                    Slider(value: Binding(get: { threshold.value }, set: { threshold.set($0) }), in: 0...1)
                }
                PhotosPicker("Choose a photo", selection: $selection, matching: .images)
                    .buttonStyle(.borderedProminent)
            }
            .padding()
            .navigationTitle("Photo")
            .onChange(of: selection) { item in
                Task { await load(item) }
            }
        }
    }

    private var shouldBlur: Bool {
        guard let result else { return true }  // blur until the image is known to be safe
        return threshold.shouldBlur(result)
    }

    private func load(_ item: PhotosPickerItem?) async {
        guard let item else { return }
        result = nil
        errorMessage = nil
        do {
            guard let data = try await item.loadTransferable(type: Data.self),
                  let picked = UIImage(data: data), let cgImage = picked.cgImage else {
                errorMessage = "That item could not be read as an image."
                return
            }
            image = picked
            result = try await classifier.classify(cgImage, orientation: CGImagePropertyOrientation(picked.imageOrientation))
        } catch {
            errorMessage = String(describing: error)
        }
    }
}

private struct ContentUnavailableHint: View {
    var body: some View {
        VStack(spacing: 8) {
            Image(systemName: "photo.on.rectangle").font(.system(size: 48))
            Text("Choose a photo to classify it on the device.")
        }
        .foregroundStyle(.secondary)
        .frame(maxWidth: .infinity, minHeight: 240)
    }
}

struct ScoresView: View {
    let classification: Classification

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text("\(classification.label) · NSFW score \(classification.nsfwScore, specifier: "%.3f")")
                .font(.headline)
            ForEach(classification.ordered, id: \.label) { item in
                HStack {
                    Text(item.label).frame(width: 70, alignment: .leading)
                    ProgressView(value: item.probability)
                    Text("\(item.probability, specifier: "%.3f")").monospacedDigit()
                }
            }
        }
    }
}

extension CGImagePropertyOrientation {
    /// The EXIF orientation that matches a UIImage's orientation.
    init(_ orientation: UIImage.Orientation) {
        switch orientation {
        case .up: self = .up
        case .upMirrored: self = .upMirrored
        case .down: self = .down
        case .downMirrored: self = .downMirrored
        case .left: self = .left
        case .leftMirrored: self = .leftMirrored
        case .right: self = .right
        case .rightMirrored: self = .rightMirrored
        @unknown default: self = .up
        }
    }
}
