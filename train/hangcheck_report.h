// hangcheck_report.h: the table of `nsa hangcheck`: one row per cell on stdout (with the
// per-op profile under it), and the JSON file of --json.
#ifndef NSA_HANGCHECK_REPORT_H
#define NSA_HANGCHECK_REPORT_H

#include "train/hangcheck.h"

void hangcheck_print_header(void);
void hangcheck_print_row(const HangcheckCell *c);
// The whole table so far (done: the matrix is complete); written atomically, so after a
// watchdog exit the file holds every finished cell.
int hangcheck_write_json(const char *path, const HangcheckOpts *o, const HangcheckCell *cells, int n, int done);

#endif
