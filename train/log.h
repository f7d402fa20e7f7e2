// log.h: what a training run reports: one JSON record per step and per evaluation in the
// run's log.jsonl (appended, flushed after every record so a crash loses at most the
// line being written), and the progress lines on stdout (one rewritten line on a
// terminal, every log_every steps otherwise, nothing when quiet).
#ifndef NSA_TRAIN_LOG_H
#define NSA_TRAIN_LOG_H

#include <stdint.h>
#include <stdio.h>

#include "data/path.h"
#include "train/trainer.h"

typedef struct {
    FILE *f;                   // log.jsonl
    char path[NSA_PATH_MAX];
    int quiet;                 // nothing on stdout (tests, scripts); the log is written all the same
    int tty;                   // stdout is a terminal: progress rewrites one line
    int line_open;             // a rewritten progress line awaits its newline
} TrainLog;

// append: continue the file (resume) instead of starting it afresh.
int trainlog_open(TrainLog *l, const char *path, int append, int quiet);
// Ends an open progress line and closes the file; NSA_ERR if a write failed on the way.
int trainlog_close(TrainLog *l);
// On resume, records past `step` describe steps that are about to be redone: drops them
// (and a last line cut off by a crash) so the log reads as one run. Rewritten atomically.
int trainlog_truncate(const char *path, int64_t step);

// Where the run stands after a step, for the progress line.
typedef struct {
    int64_t step, steps;       // steps done, steps of the whole run
    double tokens_per_s;       // over the steps of this process
    double elapsed_s, eta_s;   // since this process started; to the run's end
    int due;                   // print the progress line even off a terminal
} Progress;

// A step record; NSA_ERR (one error line) if log.jsonl cannot be written.
int trainlog_step(TrainLog *l, const StepStats *s, const Progress *p);
// An evaluation record: validation loss (nats/token) after `step`, and its time.
int trainlog_eval(TrainLog *l, int64_t step, double val_loss, double seconds);
// A line of its own on stdout (after any open progress line), unless quiet.
void trainlog_say(TrainLog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
