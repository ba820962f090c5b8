-- The seed's upload profile: 30% of requests upload a new file, 70% read a project page.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
dofile(os.getenv("BENCH_DIR") .. "/form.lua")
local auth = os.getenv("BENCH_AUTH")
local page = os.getenv("BENCH_PAGE")
local upload, seed = uploads("mixedup", 2)
function init(args) math.randomseed(seed) end
function request()
  if math.random() < 0.3 then
    return upload()
  end
  local headers = {}
  if auth and auth ~= "" then headers["Authorization"] = auth end
  return wrk.format("GET", page, headers)
end
