-- GET of one path (given as wrk's URL), with an optional Authorization header.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
