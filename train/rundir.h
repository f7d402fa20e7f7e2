// rundir.h: a training run's directory: config.cfg (the resolved config), log.jsonl,
// ckpt_<step, 8 digits>.h5 and `latest` (the name of the newest checkpoint, replaced only
// after the checkpoint itself is on disk, so it never names a partial file). Every file
// written whole goes through data/atomic.h.
#ifndef NSA_RUNDIR_H
#define NSA_RUNDIR_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

// Creates dir and its parents as needed.
int rundir_create(const char *dir);
// Takes dir/lock (flock, exclusive) for as long as the returned descriptor stays open, and
// writes this process's id into it; a second trainer gets NSA_ERR after "run directory DIR
// is in use by another nsa train (pid N)". The kernel drops the lock when its holder
// exits, however it exits, so a killed run never leaves a stale lock behind.
int rundir_lock(const char *dir);
void rundir_unlock(int fd);
// 1 if dir holds at least one checkpoint file (a run to continue, not to overwrite).
int rundir_has_ckpts(const char *dir);
// Path of the newest checkpoint (from `latest`, else the newest ckpt_*.h5); NSA_ERR with a
// message when there is none.
int rundir_latest_ckpt(const char *dir, char *path, size_t size);
// File name of the checkpoint of `step` inside the run directory.
void rundir_ckpt_name(char *name, size_t size, int64_t step);
// After ckpt `name` is complete: points `latest` at it, then deletes all but the newest
// `keep` checkpoints (never `name` itself).
int rundir_commit_ckpt(const char *dir, const char *name, int64_t keep);
// Writes dir/config.cfg.
int rundir_write_config(const char *dir, const Config *c);
// Deletes the temporaries of writers that died mid-write (never loadable, never named by
// `latest`).
void rundir_remove_tmp(const char *dir);

#endif
