import SwiftUI

@main
struct NSFWSampleApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
