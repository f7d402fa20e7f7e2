// h5util.h: moved to data/h5.h; this forward stays only while tests/test_model.c (part A
// of issue 8) still includes the old path. Delete it when that include is updated.
#include "data/h5.h"
