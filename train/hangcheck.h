// hangcheck.h: the backward-hang regression matrix of `nsa hangcheck`: every cell of
// layers × S × checkpoint × selected-branch path builds the model at the config's
// dimensions with its layer count, runs a few forward+backward steps of batch 1 under the
// watchdog, and checks time, memory, finiteness and the gate spread.
#ifndef NSA_HANGCHECK_H
#define NSA_HANGCHECK_H

#include "model/config.h"
#include "train/profile.h"
#include "train/watchdog.h"

#define HC_MAX_LIST 16            // entries of --layers and of --seq
#define HC_MAX_STEPS 65           // steps per cell (the first untimed)
#define HC_GATE_MIN_SPREAD 1e-3   // below this the three branches are indistinguishable

// Exit status of a matrix run (NSA_EXIT_HANG, 124, comes from the watchdog itself).
enum { HANGCHECK_PASS = 0, HANGCHECK_FAIL = 1, HANGCHECK_USAGE = 2 };

// Names of the checkpoint (none, layer) and path (index, materialise) dimensions.
extern const char *const hangcheck_checkpoint_names[2];
extern const char *const hangcheck_path_names[2];

typedef struct {
    const char *config_name;      // what base was loaded from (header and JSON)
    Config base;                  // n_layers and seq_len are the matrix's, not base's
    const char *json;             // table rewritten after every cell (NULL: none)
    const char *log;              // the watchdog's JSON record goes here (NULL: none)
    int layers[HC_MAX_LIST], n_layers;
    int seqs[HC_MAX_LIST], n_seqs;
    int ckpts[2], n_ckpts;        // indices into hangcheck_checkpoint_names
    int paths[2], n_paths;        // indices into hangcheck_path_names
    int steps;
    double timeout, mem_budget_mb;
    double max_ratio;             // > 0: bwd/fwd limit of the largest index cells
    int profile;
    DebugSpin spin;
} HangcheckOpts;

enum { CELL_PASS, CELL_FAIL, CELL_SKIP };

typedef struct {
    int layers, seq, checkpoint, materialise;
    int status;
    char reason[200];
    double fwd_s, bwd_s, ratio;   // best of the timed steps; ratio = bwd / fwd
    double fwd_cpu_s, bwd_cpu_s;  // process CPU seconds (all threads), best of the timed steps
    double peak_mb;               // arenas (main + scratch) + tape + params + grads
    double rss_mb;                // process peak RSS so far (getrusage), all cells up to this one
    double predicted_mb;          // materialise: the estimate the skip decision used
    double loss, gate_spread;
    int loss_finite, grads_finite;
    double ratio_limit;           // > 0: bwd/fwd was checked against it (max_ratio)
    ProfEntry prof[PROF_MAX_OPS]; // seconds per step (profile): sampled share x fwd_s / bwd_s
    int n_prof;
} HangcheckCell;

// The full matrix (DESIGN.md): seed12 dims, layers {1, 12} × S {128, 512, 1024, 2048} ×
// both checkpoints × both paths, 3 steps, 60 s deadline, 8192 MB budget. base is left for
// the caller to load from config_name.
void hangcheck_defaults(HangcheckOpts *o);
// Runs the matrix, printing the table as it goes; returns the exit status above.
int hangcheck_run(const HangcheckOpts *o);

#endif
