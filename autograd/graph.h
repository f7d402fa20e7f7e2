// graph.h: tensors and the tape. Ops append nodes while recording; graph_backward walks
// them in reverse and every node's backward accumulates (+=) into its inputs' gradients.
#ifndef NSA_GRAPH_H
#define NSA_GRAPH_H

#include <stdint.h>

#include "autograd/arena.h"

#define TENSOR_MAX_DIM 4

typedef struct Tensor {
    float *data;                     // values, row-major, contiguous
    float *grad;                     // same shape; NULL until a gradient reaches it
    int ndim;
    int64_t shape[TENSOR_MAX_DIM];
    int64_t size;                    // number of elements
    int requires_grad;
    // Inference only: when set, this [out, in] matrix is these Q4_K rows (kernels/q4k.h) and
    // `data` is not read; linear and embedding go through the fused Q4_K kernels. No gradient.
    const uint8_t *q4k;
} Tensor;

struct Graph;
struct Node;
typedef void (*BackwardFn)(struct Graph *g, struct Node *n);

#define NODE_MAX_IN 4              // the most any op takes (gate_combine)

typedef struct Node {
    BackwardFn backward;
    const char *op;                  // op name, for the watchdog and diagnostics
    int layer;                       // model layer the op belongs to (-1: none)
    Tensor *out;
    Tensor *in[NODE_MAX_IN];
    void *ctx;                       // op-specific saved state (arena memory)
    int64_t iarg[4];                 // op-specific sizes
} Node;

// What the program is doing right now, read by the watchdog thread (train/watchdog.c).
// Written by the thread that runs the step; plain loads/stores of aligned words.
typedef struct {
    volatile int phase;              // WATCH_* below
    volatile int layer;
    const char *volatile op;
    volatile double phase_start;     // nsa_now() when the phase began
    volatile int spin_op_layer;      // debug switch: layer whose `spin_op` op spins forever (-1 off)
    const char *volatile spin_op;
} Watch;

// WATCH_COMM: waiting in a collective for the other ranks of an MPI job (train/dist.h).
enum { WATCH_IDLE = 0, WATCH_FORWARD, WATCH_BACKWARD, WATCH_OPTIMIZER, WATCH_EVAL, WATCH_COMM };

// Attention results kept across a checkpointed layer's recompute (model.c). The layer's
// first forward (AKEEP_SAVE) copies each attention op's output, log-sum-exp and selection
// into `arena` (the step's main arena); the recompute (AKEEP_REPLAY) takes them back, in
// the same order, instead of running the attention kernels again.
enum { AKEEP_SAVE = 1, AKEEP_REPLAY = 2 };
#define AKEEP_MAX 4  // attention ops per layer (an NSA layer has three)
typedef struct {
    int mode, n, cur;
    Arena *arena;
    struct {
        float *o, *lse;
        int32_t *idx;                // NULL where the op makes no selection
        int64_t no, nlse, nidx;      // element counts, checked on replay
    } e[AKEEP_MAX];
} AttnKeep;

typedef struct Graph {
    Arena *arena;                    // activations and gradients of this step
    Node *nodes;
    int n_nodes, cap_nodes;
    long n_node_reallocs;            // tape growth (stops after the first step)
    int record;                      // 0: no tape (inference, recompute-free forward)
    int skip_values;                 // 1: op_linear and op_add record but leave the output's
                                     // values unset (nobody reads them: see model.c)
    int layer;                       // layer stamped on new nodes
    Watch *watch;                    // may be NULL
    AttnKeep *keep;                  // NULL: attention ops compute as usual
} Graph;

void graph_init(Graph *g, Arena *arena);
void graph_free(Graph *g);
void graph_reset(Graph *g);          // drop the tape and reset the arena
Tensor *tensor_new(Graph *g, int ndim, const int64_t *shape);  // uninitialised data
Tensor *tensor_new2(Graph *g, int64_t d0, int64_t d1);
Tensor tensor_view(float *data, int ndim, const int64_t *shape); // wraps external memory
float *tensor_grad(Graph *g, Tensor *t);  // t's gradient, allocated zeroed on first use; NULL if !requires_grad
// The same, but a gradient allocated by this call is left uninitialised and *fresh set to 1
// (else 0): the caller must then write every element (the first writer of a gradient skips
// zeroing it and reading the zeros back).
float *tensor_grad_fresh(Graph *g, Tensor *t, int *fresh);
Node *graph_push(Graph *g, const char *op, BackwardFn fn, Tensor *out);
// Runs the tape backward from `loss` (a scalar whose gradient is seeded with 1).
void graph_backward(Graph *g, Tensor *loss);
// Runs nodes [from, n_nodes) backward, for gradient-checkpoint recompute.
void graph_backward_range(Graph *g, int from);
void graph_set_op(Graph *g, const char *op);  // tells the watchdog which op runs now

#endif
