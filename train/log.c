// log.c: see log.h. Record fields and number formats are what scripts/plot.py and the
// tests read: loss as %.17g (the exact double), null for a non-finite number.
#include "train/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/atomic.h"
#include "kernels/common.h"

int trainlog_open(TrainLog *l, const char *path, int append, int quiet) {
    memset(l, 0, sizeof *l);
    if (path_fmt(l->path, sizeof l->path, "%s", path) != NSA_OK) return NSA_ERR;
    l->f = fopen(path, append ? "a" : "w");
    if (!l->f) {
        nsa_error("cannot open %s: %s", path, strerror(errno));
        return NSA_ERR;
    }
    l->quiet = quiet;
    l->tty = !quiet && isatty(fileno(stdout));
    return NSA_OK;
}

static void end_line(TrainLog *l) {
    if (l->line_open) putchar('\n');
    l->line_open = 0;
}

int trainlog_close(TrainLog *l) {
    end_line(l);
    int bad = 0;
    errno = 0;
    if (l->f) {
        bad = ferror(l->f);
        if (fclose(l->f) != 0) bad = 1;
    }
    if (bad) nsa_error("cannot write %s: %s", l->path, strerror(errno ? errno : EIO));
    l->f = NULL;
    return bad ? NSA_ERR : NSA_OK;
}

// Every record ends here: flushed, so a reader (plot.py, a test) sees whole lines, and
// checked, so a full disk stops the run instead of silently losing its history.
static int finish_record(TrainLog *l) {
    fputs("}\n", l->f);
    errno = 0;
    if (fflush(l->f) != 0 || ferror(l->f)) {
        nsa_error("cannot write %s: %s", l->path, strerror(errno ? errno : EIO));
        return NSA_ERR;
    }
    return NSA_OK;
}

static void json_num(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);  // JSON has no NaN or Infinity
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

int trainlog_step(TrainLog *l, const StepStats *s, const Progress *p) {
    fprintf(l->f, "{\"type\":\"step\",\"step\":%lld", (long long)p->step);
    json_num(l->f, "loss", s->loss, "%.17g");
    json_num(l->f, "lr", s->lr, "%.9g");
    json_num(l->f, "grad_norm", s->grad_norm, "%.9g");
    json_num(l->f, "tokens_per_s", p->tokens_per_s, "%.1f");
    json_num(l->f, "step_s", s->seconds, "%.4f");
    json_num(l->f, "comm_s", s->comm_s, "%.4f");
    json_num(l->f, "elapsed_s", p->elapsed_s, "%.2f");
    if (s->skipped) fputs(",\"skipped\":true", l->f);
    if (finish_record(l) != NSA_OK) return NSA_ERR;
    if (!l->quiet && (l->tty || p->due)) {
        char eta[32];
        fmt_duration(eta, sizeof eta, p->eta_s);
        printf("%sstep %lld/%lld | loss %.4f | lr %.3g | grad norm %.3g | %.0f tok/s | ETA %s%s", l->tty ? "\r" : "",
               (long long)p->step, (long long)p->steps, s->loss, s->lr, s->grad_norm, p->tokens_per_s, eta,
               l->tty ? "\033[K" : "\n");
        fflush(stdout);
        l->line_open = l->tty;
    }
    return NSA_OK;
}

int trainlog_eval(TrainLog *l, int64_t step, double val_loss, double seconds) {
    double bpb = val_loss / M_LN2;
    fprintf(l->f, "{\"type\":\"eval\",\"step\":%lld", (long long)step);
    json_num(l->f, "val_loss", val_loss, "%.17g");
    json_num(l->f, "val_bpb", bpb, "%.9g");
    json_num(l->f, "eval_s", seconds, "%.2f");
    if (finish_record(l) != NSA_OK) return NSA_ERR;
    if (!l->quiet) {
        printf("%sstep %lld: val loss %.4f nats/token, %.4f bits/byte (%.1f s)%s\n", l->tty ? "\r" : "",
               (long long)step, val_loss, bpb, seconds, l->tty ? "\033[K" : "");
        l->line_open = 0;
    }
    return NSA_OK;
}

void trainlog_say(TrainLog *l, const char *fmt, ...) {
    if (l->quiet) return;
    end_line(l);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

int trainlog_truncate(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return NSA_OK;
    AtomicFile a;
    if (atomic_open(&a, path) != NSA_OK) {
        fclose(in);
        return NSA_ERR;
    }
    char line[4096];
    int dropping = 0;  // inside a line longer than the buffer: none of ours, so dropped whole
    while (fgets(line, sizeof line, in)) {
        int whole = strchr(line, '\n') != NULL;
        int drop = dropping || !whole;  // !whole at EOF: cut off by a crash mid-write
        dropping = !whole;
        const char *p = strstr(line, "\"step\":");
        if (drop || (p && strtoll(p + 7, NULL, 10) > step)) continue;
        fputs(line, a.f);
    }
    fclose(in);
    return atomic_commit(&a);
}
