"""OpenMP worker threads and the engine thread.

libgomp (torch's OpenMP runtime) gives every thread that starts parallel regions its own pool of workers.
A model loaded on the main thread and then run on the engine thread leaves two pools; once libgomp manages
more threads than there are cores it stops spinning between parallel regions and parks its workers, so every
parallel op of every decode step then waits for a futex wake-up. Measured on 2 cores: a kimi-mini MoE layer
took 1 ms on the engine thread instead of 0.12 ms, a 200k-element torch mul 57 us instead of 14 us.
The engine therefore releases the loading thread's pool before its own thread starts.
"""

import ctypes
import logging
import os

log = logging.getLogger(__name__)

OMP_PAUSE_HARD = 2  # omp_pause_resource_t: free the threads, not just park them


def release_this_threads_pool() -> bool:
    """Free the OpenMP workers owned by the calling thread (OpenMP 5's omp_pause_resource_all); they are
    recreated if this thread starts parallel work again. False where torch's runtime is not libgomp."""
    try:
        # RTLD_NOLOAD: only the libgomp torch already loaded; never load a second runtime.
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        pause = gomp.omp_pause_resource_all
    except (OSError, AttributeError):
        log.debug("no libgomp with omp_pause_resource_all loaded; OpenMP pools left as they are")
        return False
    pause.argtypes = [ctypes.c_int]
    return pause(OMP_PAUSE_HARD) == 0
