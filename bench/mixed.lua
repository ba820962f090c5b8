-- The seed's upload profile: 30% of requests upload a new file, 70% read a project page.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
local auth = os.getenv("BENCH_AUTH")
local page = os.getenv("BENCH_PAGE")
local f = assert(io.open(os.getenv("BENCH_WHEEL"), "rb"))
local wheel = f:read("*a")
f:close()
local boundary = "benchboundary7d1f"
-- Each thread has its own Lua state: a table's address differs between them, which makes a
-- per-thread prefix without shared state.
local prefix = tonumber(tostring({}):match("0x(%x+)"), 16) % 1000000007
local counter = 0
local function field(name, value)
  return "--" .. boundary .. '\r\nContent-Disposition: form-data; name="' .. name .. '"\r\n\r\n' .. value .. "\r\n"
end
function init(args) math.randomseed(prefix) end
function request()
  local headers = {}
  if auth and auth ~= "" then headers["Authorization"] = auth end
  if math.random() >= 0.3 then
    return wrk.format("GET", page, headers)
  end
  counter = counter + 1
  local version = string.format("2.%d.%d", prefix, counter)
  local filename = "mixedup-" .. version .. "-py3-none-any.whl"
  local body = field(":action", "file_upload") .. field("protocol_version", "1")
    .. field("name", "mixedup") .. field("version", version)
    .. field("filetype", "bdist_wheel") .. field("pyversion", "py3")
    .. "--" .. boundary .. '\r\nContent-Disposition: form-data; name="content"; filename="'
    .. filename .. '"\r\nContent-Type: application/octet-stream\r\n\r\n' .. wheel .. "\r\n--"
    .. boundary .. "--\r\n"
  headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  return wrk.format("POST", "/", headers, body)
end
