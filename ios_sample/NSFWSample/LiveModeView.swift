import AVFoundation
import NSFWCore
import SwiftUI

/// The camera feed with the smoothed label, scores and frames per second.
struct LiveModeView: View {
    @StateObject private var camera: CameraController

    init(classifier: NSFWClassifier) {
        _camera = StateObject(wrappedValue: CameraController(classifier: classifier))
    }

    var body: some View {
        ZStack(alignment: .bottom) {
            CameraPreview(session: camera.session)
                .blur(radius: camera.live?.flagged == true ? 30 : 0)
                .ignoresSafeArea()
            overlay
                .padding()
                .background(.ultraThinMaterial, in: RoundedRectangle(cornerRadius: 12))
                .padding()
        }
        .task { await camera.start() }
        .onDisappear { camera.stop() }
    }

    @ViewBuilder private var overlay: some View {
        switch camera.status {
        case .denied:
            Text("Camera access is off. Allow it in Settings > Privacy & Security > Camera to classify the live feed.")
                .multilineTextAlignment(.center)
        case .unavailable(let reason):
            Text("The camera is unavailable: \(reason)")
        case .idle:
            ProgressView("Starting camera…")
        case .running:
            VStack(alignment: .leading, spacing: 6) {
                if let smoothed = camera.smoothed {
                    ScoresView(classification: smoothed)
                } else {
                    Text("Waiting for the first frame…")
                }
                if let live = camera.live {
                    Text("live rule: \(live.state.rawValue), smoothed score \(live.smoothed, specifier: "%.2f")")
                        .font(.caption).monospacedDigit()
                }
                if let fps = camera.framesPerSecond {
                    Text("\(fps, specifier: "%.1f") frames per second").font(.caption).monospacedDigit()
                }
                if let error = camera.lastError {
                    Text(error).font(.caption).foregroundStyle(.red)
                }
            }
        }
    }
}

private struct CameraPreview: UIViewRepresentable {
    let session: AVCaptureSession

    func makeUIView(context: Context) -> PreviewView {
        let view = PreviewView()
        view.previewLayer.session = session
        view.previewLayer.videoGravity = .resizeAspectFill
        return view
    }

    func updateUIView(_ uiView: PreviewView, context: Context) {}

    final class PreviewView: UIView {
        override class var layerClass: AnyClass { AVCaptureVideoPreviewLayer.self }
        var previewLayer: AVCaptureVideoPreviewLayer { layer as! AVCaptureVideoPreviewLayer }
    }
}
