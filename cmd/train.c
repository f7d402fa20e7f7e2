// train.c: `nsa train`: resolves the run's config (a named config or file plus --set, or
// the config of the checkpoint a run is resumed from), then trains (train/loop.h).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "data/checkpoint.h"
#include "kernels/common.h"
#include "train/dist.h"
#include "train/loop.h"
#include "train/rundir.h"
#include "train/trainer.h"

typedef struct {
    const char *config, *resume, *name;
    ArgList sets;
    double step_timeout;       // < 0: the config's
    int64_t stop_at;           // 0: none
    int quiet;
} TrainArgs;

static void usage(FILE *f) {
    fprintf(f,
            "usage: nsa train --config NAME|FILE [--set key=value ...] [--name NAME] [--step-timeout SEC]\n"
            "       nsa train --resume RUN_DIR [--set key=value ...] [--stop-at STEP]\n"
            "  Trains on the dataset `data` (default data/kjv.h5; make one with scripts/get-corpus.sh).\n"
            "  RUN_DIR (run_dir, default runs/default; --name NAME = runs/NAME) receives config.cfg,\n"
            "  log.jsonl, ckpt_<step>.h5 every ckpt_every steps and at the end, and `latest`.\n"
            "  --resume continues the newest checkpoint of RUN_DIR bit-exactly; --set may change\n"
            "  training keys (e.g. steps), not model keys. --stop-at STEP stops (with a checkpoint)\n"
            "  after STEP without changing the schedule. SIGINT/SIGTERM/SIGUSR1 finish the step, save,\n"
            "  exit 0. Under `mpirun -np N` the ranks split each step's grad_accum micro-batches\n"
            "  (a multiple of N) with the same results as one process; rank 0 writes RUN_DIR.\n"
            "  --quiet prints nothing on stdout (log.jsonl is written as always).\n"
            "  Keys:");
    for (int i = 0; i < cfg_n_keys; i++) fprintf(f, "%s%s", i % 8 == 0 ? "\n    " : " ", cfg_keys[i].name);
    fprintf(f, "\n");
}

enum { O_HELP = 1, O_CONFIG, O_SET, O_RESUME, O_NAME, O_TIMEOUT, O_STOP, O_QUIET };
static const ArgSpec specs[] = {{"config", 1, O_CONFIG},        {"set", 1, O_SET},       {"resume", 1, O_RESUME},
                                {"name", 1, O_NAME},            {"step-timeout", 1, O_TIMEOUT},
                                {"stop-at", 1, O_STOP},         {"quiet", 0, O_QUIET},   {"help", 0, O_HELP},
                                {NULL, 0, 0}};

static int parse(TrainArgs *a, int argc, char **argv) {
    ArgIter it;
    args_begin(&it, argc, argv);
    const char *v;
    int id;
    while ((id = args_next(&it, specs, &v)) > 0) {
        switch (id) {
        case O_CONFIG: a->config = v; break;
        case O_SET: arglist_push(&a->sets, v); break;
        case O_RESUME: a->resume = v; break;
        case O_NAME: a->name = v; break;
        case O_TIMEOUT:
            if (args_f64("--step-timeout", v, 0, INFINITY, &a->step_timeout) != NSA_OK) return 2;
            break;
        case O_STOP:
            if (args_i64("--stop-at", v, 1, INT64_MAX, &a->stop_at) != NSA_OK) return 2;
            break;
        case O_QUIET: a->quiet = 1; break;
        case O_HELP: usage(stdout); return 0;
        }
    }
    if (id == ARGS_BAD) return 2;
    if (!a->config == !a->resume) {
        nsa_error(a->resume ? "--resume takes the config from the run's checkpoint; drop --config (use --set)"
                            : "train needs --config NAME|FILE or --resume RUN_DIR");
        return 2;
    }
    if (a->resume && a->name) {
        nsa_error("--name picks a new run directory; with --resume the run directory is RUN_DIR");
        return 2;
    }
    // runs/NAME must stay inside runs/: no separator, no "." or "..", and nothing hidden or
    // that a later command would read as an option.
    if (a->name && (!*a->name || strchr(a->name, '/') || a->name[0] == '.' || a->name[0] == '-' ||
                    strlen(a->name) > 200)) {
        nsa_error("--name must be a plain directory name (no '/', not starting with '.' or '-', at most 200 "
                  "characters), got '%s'", a->name);
        return 2;
    }
    return CMD_GO;
}

// The run's config: from the file (or, resuming, the run's newest checkpoint, whose path
// goes to ckpt), then --set, --name and --step-timeout; validated, and a resumed run's
// model unchanged.
static int resolve(Config *c, char *ckpt, size_t size, const TrainArgs *a) {
    config_defaults(c);
    if (a->resume) {
        if (rundir_latest_ckpt(a->resume, ckpt, size) != NSA_OK) return NSA_ERR;
        c->gate_hidden = 0;
        if (ckpt_read_config(ckpt, c) != NSA_OK) return NSA_ERR;
    } else if (config_load(c, a->config) != NSA_OK) {
        return NSA_ERR;
    }
    Config file_cfg = *c;
    for (int i = 0; i < a->sets.n; i++)
        if (config_set(c, a->sets.v[i]) != NSA_OK) return NSA_ERR;
    if (a->name && path_fmt(c->run_dir, sizeof c->run_dir, "runs/%s", a->name) != NSA_OK) return NSA_ERR;
    if (a->resume && path_fmt(c->run_dir, sizeof c->run_dir, "%s", a->resume) != NSA_OK) return NSA_ERR;
    if (a->step_timeout >= 0) c->step_timeout = a->step_timeout;
    if (config_validate(c) != NSA_OK) return NSA_ERR;
    if (a->resume && !trainer_same_model(&file_cfg, c, ckpt)) return NSA_ERR;
    return NSA_OK;
}

int cmd_train(int argc, char **argv) {
    TrainArgs a = {NULL, NULL, NULL, {0}, -1, 0, 0};
    int rc = parse(&a, argc, argv);
    Dist d;
    if (rc == CMD_GO && dist_init(&d) != NSA_OK) rc = 1;
    else if (rc == CMD_GO) {
        Config c;
        char ckpt[NSA_PATH_MAX];
        TrainOpts o = {a.resume ? ckpt : NULL, a.stop_at, a.quiet, &d};
        int agreed = 0;  // every rank failed at the same place, before any collective
        rc = resolve(&c, ckpt, sizeof ckpt, &a) == NSA_OK ? 0 : 1;
        if (rc == 0 && d.size > 1 && c.grad_accum % d.size != 0) {
            // Decided from the same config on every rank, so no rank waits for another and the
            // job ends without MPI_Abort (whose teardown can drop the error line).
            if (d.rank == 0)
                nsa_error("grad_accum %lld is not a multiple of the %d ranks: each rank takes whole "
                          "micro-batches of the batch_size x grad_accum windows of a step (set grad_accum to a "
                          "multiple of %d)",
                          (long long)c.grad_accum, d.size, d.size);
            rc = 1, agreed = 1;
        }
        if (rc == 0) rc = train_run(&c, &o) == NSA_OK ? 0 : 1;
        // After an error on one rank the others may wait in a collective forever: end them.
        if (rc != 0 && d.size > 1 && !agreed) dist_abort(&d, rc);
        dist_finalize(&d);
    }
    arglist_free(&a.sets);
    return rc;
}
