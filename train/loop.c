// loop.c: see loop.h.
#include "train/loop.h"

#include <signal.h>
#include <string.h>

#include "kernels/common.h"
#include "train/log.h"
#include "train/rundir.h"
#include "train/trainer.h"

// The one piece of global mutable state here: a signal handler can reach nothing else.
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

static int train_loop(Trainer *t, TrainLog *log, const TrainOpts *o) {
    const Config *c = &t->cfg;
    int64_t end = c->steps;
    if (o->stop_at > 0 && o->stop_at < end) end = o->stop_at;
    int64_t tok_per_step = c->batch_size * c->seq_len * c->grad_accum;
    int64_t first = t->st.step, done = 0;
    double t_start = nsa_now(), t_train = 0.0;
    int rc = NSA_OK, saved_at_end = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    // A second Ctrl-C kills at once (the checkpoint rename keeps the previous one whole);
    // SA_RESTART keeps a signal from failing a checkpoint write with EINTR.
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (first >= end)
        trainlog_say(log, "%s: already at step %lld of %lld\n", c->run_dir, (long long)first, (long long)end);
    while (t->st.step < end && !stop_signal) {
        StepStats s;
        if (trainer_step(t, &s) != NSA_OK) {
            rc = NSA_ERR;
            break;
        }
        done++;
        t_train += s.seconds;
        int64_t step = t->st.step;
        Progress p = {step, c->steps, (double)(done * tok_per_step) / t_train, nsa_now() - t_start,
                      (double)(c->steps - step) * t_train / (double)done,  // to the run's end, not --stop-at
                      c->log_every > 0 && (step % c->log_every == 0 || step == end || step == first + 1)};
        if (trainlog_step(log, &s, &p) != NSA_OK) {
            rc = NSA_ERR;
            break;
        }
        int last = step == end;
        if (c->eval_every > 0 && (step % c->eval_every == 0 || (last && step == c->steps))) {
            double te = nsa_now();
            double val = trainer_eval(t);
            if (trainlog_eval(log, step, val, nsa_now() - te) != NSA_OK) {
                rc = NSA_ERR;
                break;
            }
        }
        if (c->ckpt_every > 0 && step % c->ckpt_every == 0) {
            if (trainer_save(t) != NSA_OK) {
                rc = NSA_ERR;
                break;
            }
            saved_at_end = last;
        }
    }
    if (rc == NSA_OK && !saved_at_end && t->st.step > first) rc = trainer_save(t);
    if (rc == NSA_OK) {
        if (stop_signal)
            trainlog_say(log,
                         "stopped by signal %d at step %lld; checkpoint written. "
                         "Continue with: nsa train --resume %s\n",
                         (int)stop_signal, (long long)t->st.step, c->run_dir);
        else if (done)
            trainlog_say(log, "done: step %lld/%lld in %.1f s; checkpoint %s/latest\n", (long long)t->st.step,
                         (long long)c->steps, nsa_now() - t_start, c->run_dir);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
}

int train_run(const Config *c, const TrainOpts *o) {
    // The lock comes before anything is written into the directory (and before its
    // temporaries are judged abandoned): two trainers would interleave their files.
    if (rundir_create(c->run_dir) != NSA_OK) return NSA_ERR;
    int lock = rundir_lock(c->run_dir);
    if (lock < 0) return NSA_ERR;
    if (!o->resume_ckpt && rundir_has_ckpts(c->run_dir)) {
        nsa_error("%s already holds checkpoints: continue it with --resume %s, or pick another --name", c->run_dir,
                  c->run_dir);
        rundir_unlock(lock);
        return NSA_ERR;
    }
    Trainer t;
    if (trainer_init(&t, c, o->resume_ckpt) != NSA_OK) {
        rundir_unlock(lock);
        return NSA_ERR;
    }
    TrainLog log = {0};
    int rc = NSA_ERR;
    rundir_remove_tmp(c->run_dir);
    if (rundir_write_config(c->run_dir, &t.cfg) != NSA_OK) goto done;
    if (o->resume_ckpt && trainlog_truncate(t.log_path, t.st.step) != NSA_OK) goto done;
    if (trainlog_open(&log, t.log_path, o->resume_ckpt != NULL, o->quiet) != NSA_OK) goto done;
    t.wd = watchdog_start(&t.watch, c->step_timeout, t.log_path);
    trainlog_say(&log,
                 "%s %s: %lld parameters, %s, batch %lld x %lld tokens x %lld accum, %lld steps, checkpoint=%s\n",
                 o->resume_ckpt ? "resuming" : "training", c->run_dir, (long long)t.model.n_elems, c->attn,
                 (long long)c->batch_size, (long long)c->seq_len, (long long)c->grad_accum, (long long)c->steps,
                 config_enum_name(config_key("checkpoint"), c));
    if (o->resume_ckpt) trainlog_say(&log, "  from %s (step %lld)\n", o->resume_ckpt, (long long)t.st.step);
    rc = train_loop(&t, &log, o);
done:
    if (log.f && trainlog_close(&log) != NSA_OK) rc = NSA_ERR;
    trainer_free(&t);
    rundir_unlock(lock);
    return rc;
}
