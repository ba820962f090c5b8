-- twine's upload form, a new version per request so that every upload is stored.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
local auth = os.getenv("BENCH_AUTH")
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
function request()
  counter = counter + 1
  local version = string.format("1.%d.%d", prefix, counter)
  local filename = "benchup-" .. version .. "-py3-none-any.whl"
  local body = field(":action", "file_upload") .. field("protocol_version", "1")
    .. field("name", "benchup") .. field("version", version)
    .. field("filetype", "bdist_wheel") .. field("pyversion", "py3")
    .. "--" .. boundary .. '\r\nContent-Disposition: form-data; name="content"; filename="'
    .. filename .. '"\r\nContent-Type: application/octet-stream\r\n\r\n' .. wheel .. "\r\n--"
    .. boundary .. "--\r\n"
  local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
  if auth and auth ~= "" then headers["Authorization"] = auth end
  return wrk.format("POST", "/", headers, body)
end
