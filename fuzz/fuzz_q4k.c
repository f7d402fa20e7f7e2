// fuzz_q4k.c: libFuzzer target for the quantized (Q4_K) checkpoint reader: the input is an
// HDF5 file recognised and loaded as eval and generate load one (q4k_file_is, then
// q4k_file_load), then one short forward through the Q4_K kernels.
#include <stddef.h>
#include <stdint.h>

#include "data/q4k_file.h"
#include "fuzz/forward.h"
#include "fuzz/memfile.h"
#include "fuzz/h5_closed.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = memfile_path(data, size);
    Model m;
    int rc = q4k_file_is(path) == 1 ? q4k_file_load(path, &m) : NSA_ERR;
    fuzz_h5_closed();
    if (rc != NSA_OK) return 0;
    fuzz_forward(&m);
    model_free(&m);
    return 0;
}
