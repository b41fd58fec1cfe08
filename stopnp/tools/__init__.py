"""Tools over the library: inspect (per-step learning quantities), compare (rules side by side), bench (speed
and memory), report and plot (figures of a run; plot's helpers take the matplotlib ax first), scaling (the
Allreduce cost model of distributed training)."""
