// hangcheck_report.c: see hangcheck_report.h.
#include "train/hangcheck_report.h"

#include <math.h>
#include <stdio.h>

#include "data/atomic.h"
#include "kernels/common.h"

void hangcheck_print_header(void) {
    printf("%6s %5s %-5s %-11s %8s %8s %7s %7s %8s %7s %9s %6s %7s  %s\n", "layers", "S", "ckpt", "path",
           "fwd_s", "bwd_s", "bwd/fwd", "cpu b/f", "peak_MB", "rss_MB", "loss", "grads", "gate_sd", "result");
}

void hangcheck_print_row(const HangcheckCell *c) {
    printf("%6d %5d %-5s %-11s ", c->layers, c->seq, hangcheck_checkpoint_names[c->checkpoint], hangcheck_path_names[c->materialise]);
    if (c->status == CELL_SKIP) {
        printf("%8s %8s %7s %7s %8s %7s %9s %6s %7s  SKIP: %s\n", "-", "-", "-", "-", "-", "-", "-", "-", "-",
               c->reason);
    } else {
        printf("%8.3f %8.3f %7.2f %7.2f %8.1f %7.0f %9.5f %6s %7.4f  %s%s%s\n", c->fwd_s, c->bwd_s, c->ratio,
               c->bwd_cpu_s / c->fwd_cpu_s, c->peak_mb, c->rss_mb, c->loss, c->grads_finite ? "finite" : "NONFIN", c->gate_spread,
               c->status == CELL_PASS ? "PASS" : "FAIL", c->reason[0] ? ": " : "", c->reason);
    }
    if (c->n_prof > 0) {
        for (int b = 1; b >= 0; b--) {
            double tot = 0;
            for (int i = 0; i < c->n_prof; i++) tot += c->prof[i].s[b];
            printf("         %s per op (s/step):", b ? "backward" : "forward ");
            // Largest first; at most 8.
            int used[PROF_MAX_OPS] = {0};
            for (int k = 0; k < 8; k++) {
                int best = -1;
                for (int i = 0; i < c->n_prof; i++)
                    if (!used[i] && c->prof[i].s[b] > 0 && (best < 0 || c->prof[i].s[b] > c->prof[best].s[b]))
                        best = i;
                if (best < 0) break;
                used[best] = 1;
                printf(" %s %.3f (%.0f%%)", c->prof[best].op, c->prof[best].s[b],
                       tot > 0 ? 100.0 * c->prof[best].s[b] / tot : 0.0);
            }
            printf("\n");
        }
    }
    fflush(stdout);
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v)) fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
    else fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

int hangcheck_write_json(const char *path, const HangcheckOpts *o, const HangcheckCell *cells, int n, int done) {
    AtomicFile a;
    if (atomic_open(&a, path) != NSA_OK) return NSA_ERR;
    FILE *f = a.f;
    int pass = 1;
    for (int i = 0; i < n; i++) pass &= cells[i].status != CELL_FAIL;
    fprintf(f, "{\"config\": \"%s\", \"steps\": %d, \"timeout_s\": %g, \"mem_budget_mb\": %g, ", o->config_name,
            o->steps, o->timeout, o->mem_budget_mb);
    json_num(f, "max_bwd_ratio", o->max_ratio > 0 ? o->max_ratio : NAN, 0);
    fprintf(f, "\"complete\": %s, \"pass\": %s,\n \"cells\": [\n", done ? "true" : "false",
            pass ? "true" : "false");
    for (int i = 0; i < n; i++) {
        const HangcheckCell *c = &cells[i];
        static const char *st[3] = {"pass", "fail", "skipped"};
        fprintf(f, "  {\"layers\": %d, \"seq\": %d, \"checkpoint\": \"%s\", \"path\": \"%s\", \"status\": \"%s\", ",
                c->layers, c->seq, hangcheck_checkpoint_names[c->checkpoint], hangcheck_path_names[c->materialise],
                st[c->status]);
        fprintf(f, "\"reason\": \"%s\", ", c->reason);
        if (c->materialise) json_num(f, "predicted_mb", c->predicted_mb, 0);
        if (c->status != CELL_SKIP) {
            json_num(f, "fwd_s", c->fwd_s, 0);
            json_num(f, "bwd_s", c->bwd_s, 0);
            json_num(f, "bwd_fwd", c->ratio, 0);
            json_num(f, "fwd_cpu_s", c->fwd_cpu_s, 0);
            json_num(f, "bwd_cpu_s", c->bwd_cpu_s, 0);
            json_num(f, "bwd_fwd_limit", c->ratio_limit > 0 ? c->ratio_limit : NAN, 0);
            json_num(f, "peak_mb", c->peak_mb, 0);
            json_num(f, "rss_mb", c->rss_mb, 0);
            json_num(f, "loss", c->loss, 0);
            fprintf(f, "\"loss_finite\": %s, \"grads_finite\": %s, ", c->loss_finite ? "true" : "false",
                    c->grads_finite ? "true" : "false");
            if (c->n_prof > 0) {
                fprintf(f, "\"profile_s\": {");
                for (int i2 = 0; i2 < c->n_prof; i2++)
                    fprintf(f, "%s\"%s\": [%.4f, %.4f]", i2 ? ", " : "", c->prof[i2].op, c->prof[i2].s[0],
                            c->prof[i2].s[1]);
                fprintf(f, "}, ");
            }
        }
        json_num(f, "gate_spread", c->gate_spread, 1);
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, " ]}\n");
    return atomic_commit(&a);
}
