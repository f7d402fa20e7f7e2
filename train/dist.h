// dist.h: data parallelism over MPI: joining the job when mpirun started this process, the
// rank's place in it, and the few collectives training needs, each in a fixed order so
// that N ranks compute the same bits as one process.
//
// Floats are never reduced by MPI (MPI_Allreduce leaves the order of its additions to the
// implementation): every rank gathers every rank's vector and adds them itself, in rank
// order. Only ints (the stop decision, by MAX) go through MPI_Allreduce.
#ifndef NSA_DIST_H
#define NSA_DIST_H

#include <stdint.h>

typedef struct {
    int rank, size;          // 0 and 1 when alone
    int mpi;                 // MPI_Init was called: mpirun launched this process
    double comm_s;           // seconds spent inside MPI calls so far (waiting for the slowest rank included)
} Dist;

// 1 if OpenMPI's mpirun (or another PMIx launcher) started this process: its environment
// names a rank. Read before MPI_Init, so a plain run never touches MPI (a singleton
// MPI_Init would need OpenMPI's daemons and, as root, extra flags).
int dist_launched(void);

// Rank 0 of 1, MPI untouched.
void dist_alone(Dist *d);

// Joins the job when launched (MPI_Init_thread, FUNNELED: only the main thread calls MPI;
// OpenMP threads and the watchdog never do); else dist_alone. Call after the process's
// one re-execution (kernels/cpu.c), which mpirun follows since exec keeps the pid.
int dist_init(Dist *d);

// Leaves the job after a run that every rank ended alike (MPI_Finalize waits for all of
// them). After an error on one rank call dist_abort instead: the others may be waiting in
// a collective that will never complete.
void dist_finalize(Dist *d);

// Ends every rank of the job with `code` (MPI_Abort); alone, returns.
void dist_abort(Dist *d, int code);

// The maximum of v over the ranks (ints: the order of the reduction cannot matter).
int dist_max_int(Dist *d, int v);

// Every rank waits for all the others.
void dist_barrier(Dist *d);

// recv[r·count + i] = rank r's send[i] on every rank; alone, a copy.
void dist_allgather_f32(Dist *d, float *recv, const float *send, int64_t count);
void dist_allgather_u64(Dist *d, uint64_t *recv, const uint64_t *send, int64_t count);

// Floats per rank in one gather of dist_sum_ordered: its work buffer holds size × this
// many. 256 KiB messages are long enough that bandwidth, not latency, sets their time,
// and small enough that even `tiny` (143k parameters) takes several chunks, so the tests
// run the chunked path, partial last chunk included.
#define DIST_CHUNK ((int64_t)1 << 16)

// One round of the fixed-order gradient sum. Rank r holds g, the gradient of micro-batch
// (round·size + r); afterwards every rank's sum has g_0, g_1, … of this round added to it
// left to right (sum = g_0 first when `first`): ((g_0 + g_1) + g_2) + … — exactly what one
// process gets adding its micro-batches one at a time. buf: size × min(n, DIST_CHUNK)
// floats (gathered chunk by chunk, so memory does not grow with the model); unused alone.
void dist_sum_ordered(Dist *d, float *sum, const float *g, int64_t n, int first, float *buf);

#endif
