import CLibFuzzer
import Foundation
import GatewayFuzzTargets

/// Also libFuzzer's callback by name: its archive's `main` object refers to it (that `main` is not the one
/// that runs; SwiftPM's is).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { HTTPFramingFuzz.fuzz(start, count) }

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzOne($0, $1) })
