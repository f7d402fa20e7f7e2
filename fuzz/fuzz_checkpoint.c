// fuzz_checkpoint.c: libFuzzer target for the checkpoint reader: the input is an HDF5 file
// loaded as eval, generate and trace load one (ckpt_load) and, when that succeeds, as
// `train --resume` reads its optimiser state (ckpt_load_train); then one short forward.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "data/checkpoint.h"
#include "fuzz/forward.h"
#include "fuzz/memfile.h"
#include "fuzz/h5_closed.h"
#include "kernels/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = memfile_path(data, size);
    Model m;
    int rc = ckpt_load(path, &m);
    fuzz_h5_closed();
    if (rc != NSA_OK) return 0;
    float *am = nsa_malloc((size_t)m.n_elems * sizeof(float)), *av = nsa_malloc((size_t)m.n_elems * sizeof(float));
    TrainState st;
    ckpt_load_train(path, &m, am, av, &st);
    fuzz_h5_closed();
    fuzz_forward(&m);
    free(am);
    free(av);
    model_free(&m);
    return 0;
}
