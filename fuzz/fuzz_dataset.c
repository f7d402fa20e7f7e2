// fuzz_dataset.c: libFuzzer target for the dataset reader: the input is an HDF5 file loaded
// as train, eval and trace load one (dataset_load), with and without a model vocabulary.
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "fuzz/memfile.h"
#include "fuzz/h5_closed.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = memfile_path(data, size);
    Dataset d;
    for (int k = 0; k < 2; k++) {
        int rc = dataset_load(path, k ? 256 : 0, &d);
        fuzz_h5_closed();
        if (rc == NSA_OK) {
            // What the loader promises its callers: every id below the vocabulary.
            for (int64_t i = 0; i < d.n_train; i++) NSA_ASSERT(d.train[i] < d.vocab_size);
            for (int64_t i = 0; i < d.n_val; i++) NSA_ASSERT(d.val[i] < d.vocab_size);
            dataset_free(&d);
        }
    }
    return 0;
}
