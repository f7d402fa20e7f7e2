// loop.c: see loop.h.
#include "train/loop.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "autograd/watch.h"
#include "kernels/common.h"
#include "train/log.h"
#include "train/rundir.h"
#include "train/trainer.h"

// The one piece of global mutable state here: a signal handler can reach nothing else.
static volatile sig_atomic_t stop_signal;
// Under mpirun, the line a rank prints when the signal comes from its launcher (mpirun, or
// OpenMPI's daemon on another machine), which sends SIGTERM only to end the whole job: a
// rank died, or mpirun itself was interrupted; SIGKILL follows within a second. Written
// before the handler is installed: the handler may only write(2) it.
static char launcher_msg[NSA_PATH_MAX + 256];
static volatile sig_atomic_t launcher_msg_len;

static void on_signal(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    stop_signal = sig;
    if (sig == SIGTERM && launcher_msg_len && si->si_pid > 1 && si->si_pid == getppid()) {
        ssize_t k = write(2, launcher_msg, (size_t)launcher_msg_len);
        (void)k;  // nothing to do if stderr is gone
    }
}

static int train_loop(Trainer *t, TrainLog *log, const TrainOpts *o) {
    const Config *c = &t->cfg;
    Dist *d = &t->dist;
    int writer = d->rank == 0;
    int64_t end = c->steps;
    if (o->stop_at > 0 && o->stop_at < end) end = o->stop_at;
    int64_t tok_per_step = c->batch_size * c->seq_len * c->grad_accum;
    int64_t first = t->st.step, done = 0;
    double t_start = nsa_now(), t_train = 0.0;
    int rc = NSA_OK, saved_at_end = 0, stop = 0;
    struct sigaction sa, old_int, old_term, old_usr1;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    // A second Ctrl-C kills at once (the checkpoint rename keeps the previous one whole);
    // SA_RESTART keeps a signal from failing a checkpoint write with EINTR.
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    stop_signal = 0;
    launcher_msg_len = 0;
    if (d->mpi) {
        snprintf(launcher_msg, sizeof launcher_msg,
                 "nsa: error: rank %d: mpirun is ending the job: a rank died (mpirun names it) or mpirun was "
                 "interrupted (`kill -USR1 <mpirun pid>` stops with a checkpoint instead); continue from the "
                 "latest checkpoint with: nsa train --resume %s\n",
                 d->rank, c->run_dir);
        launcher_msg_len = (sig_atomic_t)strlen(launcher_msg);
    }
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    // mpirun forwards SIGUSR1 to every rank (SIGINT and SIGTERM it turns into a kill).
    sigaction(SIGUSR1, &sa, &old_usr1);
    if (first >= end)
        trainlog_say(log, "%s: already at step %lld of %lld\n", c->run_dir, (long long)first, (long long)end);
    while (t->st.step < end && !stop) {
        StepStats s;
        if (trainer_step(t, &s) != NSA_OK) {
            rc = NSA_ERR;
            break;
        }
        // Decided together, right after the step: a signal may reach one rank only, or the
        // ranks at different moments, and all must stop after the same step for rank 0's
        // checkpoint to be the state of every rank. The largest signal number is kept.
        double comm0 = d->comm_s;
        watch_phase(&t->watch, WATCH_COMM);
        t->watch.op = "stop decision";
        stop = dist_max_int(d, (int)stop_signal);
        watch_phase(&t->watch, WATCH_IDLE);
        s.comm_s += d->comm_s - comm0;
        done++;
        t_train += s.seconds;
        int64_t step = t->st.step;
        Progress p = {step, c->steps, (double)(done * tok_per_step) / t_train, nsa_now() - t_start,
                      (double)(c->steps - step) * t_train / (double)done,  // to the run's end, not --stop-at
                      c->log_every > 0 && (step % c->log_every == 0 || step == end || step == first + 1)};
        if (writer && trainlog_step(log, &s, &p) != NSA_OK) {
            rc = NSA_ERR;
            break;
        }
        int last = step == end;
        if (c->eval_every > 0 && (step % c->eval_every == 0 || (last && step == c->steps))) {
            double te = nsa_now();
            double val = trainer_eval(t);
            if (writer && trainlog_eval(log, step, val, nsa_now() - te) != NSA_OK) {
                rc = NSA_ERR;
                break;
            }
        }
        if (c->ckpt_every > 0 && step % c->ckpt_every == 0) {
            if (writer && trainer_save(t) != NSA_OK) {
                rc = NSA_ERR;
                break;
            }
            // The others wait here for the write, outside any watchdog deadline (a process
            // alone writes its checkpoint outside one too), so that their next collective
            // waits only for compute. Rank 0 waits for ranks that are already here: that
            // wait is watched, so a stalled rank cannot hang it.
            if (writer) {
                watch_phase(&t->watch, WATCH_COMM);
                t->watch.op = "barrier after checkpoint";
            }
            dist_barrier(d);
            watch_phase(&t->watch, WATCH_IDLE);
            saved_at_end = last;
        }
    }
    if (rc == NSA_OK && !saved_at_end && t->st.step > first && writer) rc = trainer_save(t);
    if (rc == NSA_OK) {
        if (stop)
            trainlog_say(log,
                         "stopped by signal %d at step %lld; checkpoint written. "
                         "Continue with: nsa train --resume %s\n",
                         stop, (long long)t->st.step, c->run_dir);
        else if (done)
            trainlog_say(log, "done: step %lld/%lld in %.1f s; checkpoint %s/latest\n", (long long)t->st.step,
                         (long long)c->steps, nsa_now() - t_start, c->run_dir);
    }
    launcher_msg_len = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);
    return rc;
}

int train_run(const Config *c, const TrainOpts *o) {
    Dist alone;
    dist_alone(&alone);
    const Dist *d = o->dist ? o->dist : &alone;
    int writer = d->rank == 0;
    // Rank 0 alone writes the run directory, and first locks it: before anything is written
    // there (or its temporaries are judged abandoned), since two trainers would interleave
    // their files. A lock held elsewhere fails rank 0 only; cmd_train then ends the job.
    int lock = -1;
    if (writer && (rundir_create(c->run_dir) != NSA_OK || (lock = rundir_lock(c->run_dir)) < 0)) return NSA_ERR;
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
    log.quiet = 1;  // ranks other than 0 say nothing on stdout
    int rc = NSA_ERR;
    if (trainer_distribute(&t, d) != NSA_OK) goto done;
    if (writer) {
        rundir_remove_tmp(c->run_dir);
        if (rundir_write_config(c->run_dir, &t.cfg) != NSA_OK) goto done;
        if (o->resume_ckpt && trainlog_truncate(t.log_path, t.st.step) != NSA_OK) goto done;
        if (trainlog_open(&log, t.log_path, o->resume_ckpt != NULL, o->quiet) != NSA_OK) goto done;
    }
    t.wd = watchdog_start(&t.watch, c->step_timeout, writer ? t.log_path : NULL);
    trainlog_say(&log,
                 "%s %s: %lld parameters, %s, batch %lld x %lld tokens x %lld accum, %lld steps, checkpoint=%s\n",
                 o->resume_ckpt ? "resuming" : "training", c->run_dir, (long long)t.model.n_elems, c->attn,
                 (long long)c->batch_size, (long long)c->seq_len, (long long)c->grad_accum, (long long)c->steps,
                 config_enum_name(config_key("checkpoint"), c));
    if (d->size > 1)
        trainlog_say(&log, "  %d ranks (mpirun), %lld micro-batches each per step\n", d->size,
                     (long long)(c->grad_accum / d->size));
    if (o->resume_ckpt) trainlog_say(&log, "  from %s (step %lld)\n", o->resume_ckpt, (long long)t.st.step);
    rc = train_loop(&t, &log, o);
done:
    if (log.f && trainlog_close(&log) != NSA_OK) rc = NSA_ERR;
    trainer_free(&t);
    rundir_unlock(lock);
    return rc;
}
