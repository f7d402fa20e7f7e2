// checkpoint.h: moved to data/checkpoint.h; this forward stays only while tests/test_model.c
// (part A of issue 8) still includes the old path. Delete it when that include is updated.
#include "data/checkpoint.h"
