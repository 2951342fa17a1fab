// The header declares a function of libFuzzer; there is nothing to compile.
