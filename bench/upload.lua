-- Uploads only, a new version per request.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
dofile(os.getenv("BENCH_DIR") .. "/form.lua")
request = uploads("benchup", 1)
