// forward.h: what the loader fuzz targets do with a model they managed to load: one short
// forward and loss, as eval and generate would run it, so that a config or weights that
// pass every check but break a kernel are found too.
#ifndef NSA_FUZZ_FORWARD_H
#define NSA_FUZZ_FORWARD_H

#include "model/model.h"

void fuzz_forward(Model *m);

#endif
