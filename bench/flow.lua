-- pip install, request by request: /<project>/ (a redirect), the simple page, the file.
-- Each connection walks the projects listed in BENCH_FLOW (lines "project filename").
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
local auth = os.getenv("BENCH_AUTH")
local steps = {}
for line in io.lines(os.getenv("BENCH_FLOW")) do
  local project, file = line:match("^(%S+) (%S+)$")
  steps[#steps + 1] = "/" .. project .. "/"
  steps[#steps + 1] = "/simple/" .. project .. "/"
  steps[#steps + 1] = "/packages/" .. file
end
local counter = 0
function setup(thread) thread:set("offset", math.random(0, math.floor(#steps / 3) - 1) * 3) end
function request()
  local path = steps[(offset + counter) % #steps + 1]
  counter = counter + 1
  local headers = {}
  if auth and auth ~= "" then headers["Authorization"] = auth end
  return wrk.format("GET", path, headers)
end
