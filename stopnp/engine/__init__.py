"""The engine: what a network is and how one step of it runs, for every rule.

    network.py   layer and synapse records, building from a config, parameter names, input validation
    models.py    the named models (mlp, lenet5, vgg11, resnet18) as layer-spec lists
    state.py     the run-state containers (state, traces, gradient sums, scratch) of a Workspace
    synapse.py   one step of every synapse, forward and backward, its kernels chosen once per workspace
    threads.py   thread policy: numba's pool and OpenBLAS's never spin on the same cores
    memory.py    the bytes a network and its workspace will take, checked before they are allocated

The engine never imports data, run, tools, cli or export: it knows no files, screens or formats.
"""
