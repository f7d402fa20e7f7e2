// hangcheck.c: `nsa hangcheck`: the backward-hang matrix (train/hangcheck.h) from the
// command line: its dimensions, limits, the config it runs at, and the debug spin.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "kernels/common.h"
#include "train/hangcheck.h"

typedef struct {
    HangcheckOpts o;
    ArgList sets;
    const char *spin;          // --debug-spin, else $NSA_DEBUG_SPIN
} HangcheckArgs;

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa hangcheck [--layers 1,12] [--seq 128,512,1024,2048] [--checkpoint none,layer]\n"
            "                     [--path index,materialise] [--steps 3] [--timeout 60] [--json FILE]\n"
            "                     [--mem-budget-mb 8192] [--max-bwd-ratio R] [--config seed12]\n"
            "                     [--set key=value ...] [--log FILE] [--profile]\n"
            "  Runs every cell of layers x S x checkpoint x selected-branch path: batch 1, random\n"
            "  tokens, --steps forward+backward steps (the first a warm-up, not timed), under a\n"
            "  watchdog with a deadline of --timeout seconds per phase per layer. Per cell: the best\n"
            "  forward and backward wall seconds of the timed steps, bwd/fwd, the same ratio in\n"
            "  process CPU time (cpu b/f: a cross-check on a busy machine), peak memory (arenas + tape\n"
            "  + params + grads; rss_MB is the process peak so far), final loss, whether loss and\n"
            "  every gradient were finite, and gate_sd (std of the 3 branch gates of the first NSA\n"
            "  layer, mean over tokens and heads; must exceed %g).\n"
            "  A cell fails on a non-finite loss or gradient, gate_sd too small, peak above\n"
            "  --mem-budget-mb, or (with --max-bwd-ratio) bwd/fwd above R in the index-path cells\n"
            "  with the largest layers and S of the matrix (R + 1 with checkpoint=layer, whose\n"
            "  backward includes one recompute of every layer's forward). materialise cells whose\n"
            "  predicted memory exceeds the budget are skipped (not a failure).\n"
            "  The model is the config's with n_layers from --layers and seq_len = the largest S\n"
            "  (--set cannot change those two).\n"
            "  --json FILE writes the table (rewritten after every cell); --log FILE receives the\n"
            "  watchdog's JSON record; --profile adds wall seconds per op (sampled at 1 kHz; with\n"
            "  checkpoint=layer, backward includes the recompute under the forward ops' names).\n"
            "  Exit: 0 all passed, 1 a cell failed, 2 bad usage, 124 the watchdog fired.\n"
            "  Debug only: --debug-spin [forward:|backward:]OP@LAYER (or NSA_DEBUG_SPIN) plants a\n"
            "  hang: that op spins forever, for testing the watchdog.\n",
            HC_GATE_MIN_SPREAD);
}

// Comma list of names, each one of names[0..k) at most once; out gets their indices.
static int parse_names(const char *opt, const char *s, const char *const *names, int k, int *out, int *n) {
    *n = 0;
    const char *p = s;
    do {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        int j = 0, dup = 0;
        while (j < k && (strlen(names[j]) != len || strncmp(p, names[j], len))) j++;
        for (int i = 0; i < *n; i++) dup |= out[i] == j;
        if (j == k || dup) {
            nsa_error("%s: '%s' is not a comma list of distinct names from: %s, %s", opt, s, names[0], names[1]);
            return NSA_ERR;
        }
        out[(*n)++] = j;
        p = comma ? comma + 1 : NULL;
    } while (p);
    return NSA_OK;
}

enum { O_HELP = 1, O_LAYERS, O_SEQ, O_CKPT, O_PATH, O_STEPS, O_TIMEOUT, O_JSON, O_BUDGET, O_RATIO, O_CONFIG,
       O_SET, O_LOG, O_PROFILE, O_SPIN };
static const ArgSpec specs[] = {
    {"layers", 1, O_LAYERS},        {"seq", 1, O_SEQ},          {"checkpoint", 1, O_CKPT},
    {"path", 1, O_PATH},            {"steps", 1, O_STEPS},      {"timeout", 1, O_TIMEOUT},
    {"json", 1, O_JSON},            {"mem-budget-mb", 1, O_BUDGET},
    {"max-bwd-ratio", 1, O_RATIO},  {"config", 1, O_CONFIG},    {"set", 1, O_SET},
    {"log", 1, O_LOG},              {"profile", 0, O_PROFILE},  {"debug-spin", 1, O_SPIN},
    {"help", 0, O_HELP},            {NULL, 0, 0}};

static int parse(HangcheckArgs *a, int argc, char **argv) {
    HangcheckOpts *o = &a->o;
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int64_t steps;
    int id = ARGS_END, rc = NSA_OK;
    while (rc == NSA_OK && (id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_LAYERS:
            rc = args_i64_list("--layers", v, 1, CFG_MAX_LAYERS, HC_MAX_LIST, o->layers, &o->n_layers);
            break;
        case O_SEQ: rc = args_i64_list("--seq", v, 1, 1 << 20, HC_MAX_LIST, o->seqs, &o->n_seqs); break;
        case O_CKPT:
            rc = parse_names("--checkpoint", v, hangcheck_checkpoint_names, 2, o->ckpts, &o->n_ckpts);
            break;
        case O_PATH: rc = parse_names("--path", v, hangcheck_path_names, 2, o->paths, &o->n_paths); break;
        case O_STEPS:
            rc = args_i64("--steps", v, 1, HC_MAX_STEPS, &steps);
            o->steps = (int)steps;
            break;
        case O_TIMEOUT: rc = args_f64_open("--timeout", v, 0, INFINITY, &o->timeout); break;
        case O_BUDGET: rc = args_f64_open("--mem-budget-mb", v, 0, INFINITY, &o->mem_budget_mb); break;
        case O_RATIO: rc = args_f64_open("--max-bwd-ratio", v, 0, INFINITY, &o->max_ratio); break;
        case O_JSON: o->json = v; break;
        case O_LOG: o->log = v; break;
        case O_CONFIG: o->config_name = v; break;
        case O_SET: arglist_push(&a->sets, v); break;
        case O_PROFILE: o->profile = 1; break;
        case O_SPIN: a->spin = v; break;
        case O_HELP: usage(stdout); return 0;
        }
    }
    if (rc != NSA_OK || id == ARGS_BAD) return 2;
    if (debug_spin_parse(&o->spin, a->spin) != NSA_OK) return 2;
    if (config_load(&o->base, o->config_name) != NSA_OK) return 2;
    for (int i = 0; i < a->sets.n; i++)
        if (config_set(&o->base, a->sets.v[i]) != NSA_OK) return 2;
    return CMD_GO;
}

int cmd_hangcheck(int argc, char **argv) {
    HangcheckArgs a;
    memset(&a, 0, sizeof a);
    hangcheck_defaults(&a.o);
    a.spin = getenv("NSA_DEBUG_SPIN");
    int rc = parse(&a, argc, argv);
    if (rc == CMD_GO) {
        const DebugSpin *s = &a.o.spin;
        if (s->on)
            nsa_warn("debug spin armed: op %s in layer %d (%s) spins forever; the watchdog ends this run", s->op,
                     s->layer,
                     s->phase == WATCH_FORWARD ? "forward" : s->phase == WATCH_BACKWARD ? "backward" : "any phase");
        rc = hangcheck_run(&a.o);
    }
    arglist_free(&a.sets);
    return rc;
}
