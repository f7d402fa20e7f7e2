// h5_closed.h: what every HDF5 loader target checks after each input, whatever the loader
// answered: nsa closed every HDF5 object it opened (a leaked id keeps its file open).
#ifndef NSA_FUZZ_H5_CLOSED_H
#define NSA_FUZZ_H5_CLOSED_H

#include <hdf5.h>

#include "kernels/common.h"

static inline void fuzz_h5_closed(void) { NSA_ASSERT(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0); }

#endif
