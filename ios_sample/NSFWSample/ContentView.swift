import SwiftUI

struct ContentView: View {
    @StateObject private var loader = ClassifierLoader()

    var body: some View {
        Group {
            switch loader.state {
            case .loading:
                ProgressView("Loading model…")
            case .failed(let message):
                VStack(spacing: 12) {
                    Image(systemName: "exclamationmark.triangle").font(.largeTitle)
                    Text("The model could not be loaded").font(.headline)
                    Text(message).font(.footnote).multilineTextAlignment(.center)
                }
                .padding()
            case .ready(let classifier):
                TabView {
                    PhotoModeView(classifier: classifier)
                        .tabItem { Label("Photo", systemImage: "photo") }
                    LiveModeView(classifier: classifier)
                        .tabItem { Label("Live", systemImage: "camera") }
                }
            }
        }
        .task { await loader.load() }
    }
}

@MainActor
final class ClassifierLoader: ObservableObject {
    enum State {
        case loading
        case ready(NSFWClassifier)
        case failed(String)
    }

    @Published private(set) var state: State = .loading

    func load() async {
        do {
            state = .ready(try NSFWClassifier())
        } catch {
            state = .failed(String(describing: error))
        }
    }
}
