import AVFoundation
import NSFWCore

/// Runs the back camera and hands frames to the classifier on a background
/// queue, dropping frames while one is still being classified.
final class CameraController: NSObject, ObservableObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    enum Status: Equatable {
        case idle
        case running
        case denied
        case unavailable(String)
    }

    @Published private(set) var status: Status = .idle
    @Published private(set) var smoothed: Classification?
    @Published private(set) var framesPerSecond: Double?
    /// The live rule's decision (docs/live-rule.md): blur while its state is on.
    @Published private(set) var live: LiveRuleOutput?
    @Published private(set) var lastError: String?

    let session = AVCaptureSession()
    private let classifier: NSFWClassifier
    private let queue = DispatchQueue(label: "nsfw.camera.frames", qos: .userInitiated)
    private let lock = NSLock()
    private var inFlight = false
    private var smoother = ScoreSmoother(window: 5) // the label and bars shown, and fps
    /// The rule the toolkit and the web sample use; a feed that stalls for over a second starts over.
    private var liveRule = LiveRule(LiveRuleParameters(maxGapS: 1))

    init(classifier: NSFWClassifier) {
        self.classifier = classifier
        super.init()
    }

    func start() async {
        switch AVCaptureDevice.authorizationStatus(for: .video) {
        case .authorized:
            break
        case .notDetermined:
            guard await AVCaptureDevice.requestAccess(for: .video) else {
                await setStatus(.denied)
                return
            }
        default:
            await setStatus(.denied)
            return
        }
        await MainActor.run {
            self.liveRule.reset()
            self.smoother.reset()
        }
        do {
            try configure()
            queue.async { self.session.startRunning() }
            await setStatus(.running)
        } catch {
            await setStatus(.unavailable(error.localizedDescription))
        }
    }

    func stop() {
        queue.async { self.session.stopRunning() }
    }

    private func configure() throws {
        guard session.inputs.isEmpty else { return }
        guard let camera = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back) else {
            throw CameraError.noCamera
        }
        session.beginConfiguration()
        defer { session.commitConfiguration() }
        session.sessionPreset = .vga640x480
        let input = try AVCaptureDeviceInput(device: camera)
        guard session.canAddInput(input) else { throw CameraError.cannotAdd }
        session.addInput(input)
        let output = AVCaptureVideoDataOutput()
        output.alwaysDiscardsLateVideoFrames = true
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.setSampleBufferDelegate(self, queue: queue)
        guard session.canAddOutput(output) else { throw CameraError.cannotAdd }
        session.addOutput(output)
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer,
                       from connection: AVCaptureConnection) {
        guard let pixelBuffer = CMSampleBufferGetImageBuffer(sampleBuffer), claimSlot() else { return }
        let time = CMSampleBufferGetPresentationTimeStamp(sampleBuffer).seconds
        Task {
            defer { self.releaseSlot() }
            do {
                // The back camera's sensor is landscape; .right makes a portrait frame upright.
                let result = try await classifier.classify(pixelBuffer, orientation: .right)
                await publish(result, at: time)
            } catch {
                await MainActor.run { self.lastError = String(describing: error) }
            }
        }
    }

    /// Throttling: only one frame is classified at a time; the others are dropped.
    private func claimSlot() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if inFlight { return false }
        inFlight = true
        return true
    }

    private func releaseSlot() {
        lock.lock()
        inFlight = false
        lock.unlock()
    }

    @MainActor
    private func publish(_ result: Classification, at time: Double) {
        smoothed = smoother.add(result, at: time)
        framesPerSecond = smoother.framesPerSecond
        live = liveRule.update(at: time, nsfwScore: result.nsfwScore)
        lastError = nil
    }

    @MainActor
    private func setStatus(_ newStatus: Status) {
        status = newStatus
    }

    enum CameraError: Error, LocalizedError {
        case noCamera
        case cannotAdd

        var errorDescription: String? {
            switch self {
            case .noCamera: return "This device has no back camera."
            case .cannotAdd: return "The camera could not be configured."
            }
        }
    }
}
