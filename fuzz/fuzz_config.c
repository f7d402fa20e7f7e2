// fuzz_config.c: libFuzzer target for the config parser: the input is a .cfg file, read as
// `--config FILE` reads it (config_load), then validated as every command validates it.
#include <stddef.h>
#include <stdint.h>

#include "fuzz/memfile.h"
#include "kernels/common.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Config c;
    config_defaults(&c);
    if (config_load(&c, memfile_path(data, size)) == NSA_OK && config_validate(&c) == NSA_OK) {
        // A valid config must describe a model whose size the validation bounded.
        NSA_ASSERT(config_n_params(&c) <= CFG_MAX_ELEMS);
    }
    return 0;
}
