-- wrk script for benchmarks/admission.py: one CSR AdmissionReview per request, each with a
-- fresh uid, and a count of the answers that admitted it (for the overspend check).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  n, allowed = 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local review = [[{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{]]
  .. [["uid":"UID","operation":"CREATE",]]
  .. [["kind":{"group":"certificates.k8s.io","version":"v1","kind":"CertificateSigningRequest"},]]
  .. [["resource":{"group":"certificates.k8s.io","version":"v1",]]
  .. [["resource":"certificatesigningrequests"},]]
  .. [["userInfo":{"username":"alice","groups":["system:authenticated"]},]]
  .. [["object":{"metadata":{"name":"UID","uid":"UID"},"spec":{"usages":["client auth"]}}}}]]

function request()
  n = n + 1
  return wrk.format(nil, nil, nil, (review:gsub("UID", "wrk" .. id .. "-" .. n)))
end

function response(status, headers, body)
  if status == 200 and body:find('"allowed": *true') then
    allowed = allowed + 1
  end
end

function done(summary, latency, requests)
  local admitted = 0
  for _, thread in ipairs(threads) do
    admitted = admitted + thread:get("allowed")
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.3f %.3f %d %d\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, admitted,
    e.connect + e.read + e.write + e.status + e.timeout))
end
