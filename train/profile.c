// profile.c: see profile.h. A look that comes late (the sampler was descheduled) is
// charged as one tick only: the whole gap would go to whichever op runs when a core frees
// up. Shares of the sampled time are what the caller scales to its measured phase times.
#include "train/profile.h"

#include <string.h>
#include <time.h>

#include "kernels/common.h"

struct Profiler {
    Watch *w;
    atomic_int stop, active;
    pthread_t thread;
    pthread_mutex_t mu;
    ProfEntry e[PROF_MAX_OPS];
    int n;
};

static void *prof_thread(void *arg) {
    Profiler *p = arg;
    struct timespec tick = {0, 1000 * 1000};
    double last = nsa_now();
    while (!atomic_load(&p->stop)) {
        nanosleep(&tick, NULL);
        double now = nsa_now(), dt = now - last;
        last = now;
        if (dt > 3e-3) dt = 1e-3;
        if (!atomic_load(&p->active)) continue;
        int phase = p->w->phase;
        const char *op = p->w->op;
        if ((phase != WATCH_FORWARD && phase != WATCH_BACKWARD) || !op) continue;
        int b = phase == WATCH_BACKWARD;
        pthread_mutex_lock(&p->mu);
        int i = 0;
        while (i < p->n && p->e[i].op != op && strcmp(p->e[i].op, op)) i++;
        if (i == p->n && p->n < PROF_MAX_OPS) p->e[p->n++] = (ProfEntry){op, {0, 0}};
        if (i < p->n) p->e[i].s[b] += dt;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

Profiler *profiler_start(Watch *w) {
    Profiler *p = nsa_calloc(1, sizeof *p);
    p->w = w;
    pthread_mutex_init(&p->mu, NULL);
    atomic_init(&p->stop, 0);
    atomic_init(&p->active, 0);
    NSA_ASSERT(pthread_create(&p->thread, NULL, prof_thread, p) == 0);
    return p;
}

void profiler_stop(Profiler *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void profiler_clear(Profiler *p) {
    pthread_mutex_lock(&p->mu);
    p->n = 0;
    pthread_mutex_unlock(&p->mu);
}

void profiler_active(Profiler *p, int on) { atomic_store(&p->active, on); }

int profiler_read(Profiler *p, ProfEntry *out) {
    pthread_mutex_lock(&p->mu);
    int n = p->n;
    memcpy(out, p->e, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&p->mu);
    return n;
}
