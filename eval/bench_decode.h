// bench_decode.h: `nsa bench decode`: decode tokens/s of NSA vs dense layers of the same
// dimensions at long contexts, and time per step against the bytes a step must read.
#ifndef NSA_BENCH_DECODE_H
#define NSA_BENCH_DECODE_H

// Prints the table (stdout). The caches are filled with random K/V instead of a prefill
// (a 32k dense prefill alone would take minutes); a decode step costs the same either way.
int bench_decode(void);

#endif
