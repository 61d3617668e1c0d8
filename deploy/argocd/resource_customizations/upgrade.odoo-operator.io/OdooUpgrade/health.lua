-- Argo CD health of an upgrade.odoo-operator.io/OdooUpgrade.
-- Healthy once Succeeded, Degraded once Failed (with the reason the operator or the platform
-- gave), Progressing otherwise, and Progressing while the operator has not yet observed the
-- latest spec (status.observedGeneration behind metadata.generation).
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function failure_message(status)
  local ready = condition(status.conditions, "Ready")
  if ready ~= nil and ready.status == "False" and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  -- Otherwise the first step condition that is False with a message says what went wrong.
  if status.conditions ~= nil then
    for _, c in ipairs(status.conditions) do
      if c.status == "False" and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  if status.failures ~= nil and status.failures[1] ~= nil then
    local f = status.failures[1]
    if f.reason ~= nil and f.message ~= nil then
      return f.reason .. ": " .. f.message
    end
    return f.message or f.reason
  end
  return "The upgrade failed"
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the upgrade"
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if status.phase == "Succeeded" then
  hs.status = "Healthy"
  if status.download ~= nil and status.download.path ~= nil then
    hs.message = "Upgraded dump written to " .. status.download.path
  else
    hs.message = "Upgrade succeeded"
  end
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = failure_message(status)
  return hs
end

hs.status = "Progressing"
hs.message = status.phase
-- The Ready condition says what the operator waits for (a missing Secret or claim, the platform).
local ready = condition(status.conditions, "Ready")
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = hs.message .. ": " .. ready.message
end
if status.platform ~= nil and status.platform.state ~= nil then
  hs.message = hs.message .. " (platform state: " .. status.platform.state .. ")"
end
if status.phase == "Uploading" and status.upload ~= nil and status.upload.bytesDone ~= nil
    and status.upload.bytesTotal ~= nil and status.upload.bytesTotal > 0 then
  local percent = math.floor(status.upload.bytesDone * 100 / status.upload.bytesTotal)
  hs.message = hs.message .. " (uploaded " .. tostring(percent) .. "%)"
end
return hs
