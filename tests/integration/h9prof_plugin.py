import time, pytest
from purchases.aws import glue_catalog
orig = glue_catalog.register_batch
total = []
def timed(*a, **k):
    t = time.perf_counter(); r = orig(*a, **k); total.append(time.perf_counter() - t); return r
def pytest_configure(config):
    glue_catalog.register_batch = timed
    import purchases.steps as s
    s.glue_catalog = glue_catalog
def pytest_unconfigure(config):
    print("\nregister_batch seconds:", [round(x, 2) for x in total])
