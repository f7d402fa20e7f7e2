// dist.c: see dist.h. The only file that includes mpi.h.
#include "train/dist.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

int dist_launched(void) {
    // OpenMPI's mpirun exports OMPI_COMM_WORLD_SIZE; PMIx launchers (srun --mpi=pmix,
    // prterun) export PMIX_RANK.
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (v && *v) return 1;
    v = getenv("PMIX_RANK");
    return v && *v;
}

void dist_alone(Dist *d) {
    memset(d, 0, sizeof *d);
    d->size = 1;
}

int dist_init(Dist *d) {
    dist_alone(d);
    if (!dist_launched()) return NSA_OK;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        nsa_error("MPI_Init failed (launched by mpirun, but the job could not be joined)");
        return NSA_ERR;
    }
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    return NSA_OK;
}

void dist_finalize(Dist *d) {
    if (d->mpi) MPI_Finalize();
    dist_alone(d);
}

void dist_abort(Dist *d, int code) {
    if (d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
}

int dist_max_int(Dist *d, int v) {
    if (d->size == 1) return v;
    int out = v;
    double t0 = nsa_now();
    MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    d->comm_s += nsa_now() - t0;
    return out;
}

void dist_barrier(Dist *d) {
    if (d->size == 1) return;
    double t0 = nsa_now();
    MPI_Barrier(MPI_COMM_WORLD);
    d->comm_s += nsa_now() - t0;
}

// MPI counts are ints; every caller's count is bounded far below that (DIST_CHUNK, a
// step's micro-batches, an evaluation's windows), so exceeding it is a program error.
static void allgather(Dist *d, void *recv, const void *send, int64_t count, MPI_Datatype type, size_t elem) {
    if (d->size == 1) {
        memcpy(recv, send, (size_t)count * elem);
        return;
    }
    NSA_ASSERT(count >= 0 && count <= 0x7fffffff);
    double t0 = nsa_now();
    MPI_Allgather(send, (int)count, type, recv, (int)count, type, MPI_COMM_WORLD);
    d->comm_s += nsa_now() - t0;
}

void dist_allgather_f32(Dist *d, float *recv, const float *send, int64_t count) {
    allgather(d, recv, send, count, MPI_FLOAT, sizeof(float));
}

void dist_allgather_u64(Dist *d, uint64_t *recv, const uint64_t *send, int64_t count) {
    allgather(d, recv, send, count, MPI_UINT64_T, sizeof(uint64_t));
}

// sum = x (first) or sum += x, element by element: each element's result depends only on
// its own two operands, so threads and vector width cannot change a bit.
static void add_into(float *sum, const float *x, int64_t n, int first) {
    if (first) {
        memcpy(sum, x, (size_t)n * sizeof *sum);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) sum[i] += x[i];
}

void dist_sum_ordered(Dist *d, float *sum, const float *g, int64_t n, int first, float *buf) {
    if (d->size == 1) {
        add_into(sum, g, n, first);
        return;
    }
    for (int64_t off = 0; off < n; off += DIST_CHUNK) {
        int64_t c = n - off < DIST_CHUNK ? n - off : DIST_CHUNK;
        dist_allgather_f32(d, buf, g + off, c);
        // Rank order is micro-batch order within the round (micro-batch round·size + r).
        for (int r = 0; r < d->size; r++) add_into(sum + off, buf + (int64_t)r * c, c, first && r == 0);
    }
}
