#include <stddef.h>
#include <stdint.h>

// libFuzzer's own driver (linked by -sanitize=fuzzer). SwiftPM gives an executable its own `main`, so
// the targets call the driver from there instead of exporting LLVMFuzzerTestOneInput to libFuzzer's main.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
