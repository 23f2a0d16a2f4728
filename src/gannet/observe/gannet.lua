-- Wireshark dissector for the Gannet transport (docs/protocol.md, version 3).
--
-- Gannet carries TCP's semantics in UDP datagrams: a long header (any
-- segment, with TLV options) or a 20-byte short header (established ACK,
-- PSH, FIN segments with a timestamp), a CRC32C trailer stored least
-- significant byte first. Display filter: gannet. Datagrams are recognised
-- on any UDP port by their version byte and a correct CRC32C (heuristic),
-- or by "Decode As" / the ports preference.
--
-- Encrypted connections (docs/security.md, gannet/wire/protected.py): the
-- SYN and SYN-ACK are plaintext and carry the key exchange as option 64;
-- every later datagram is PROTECTED - an 8-byte authenticated header
-- (form, key phase, the low 23 bits of the packet number, destination
-- connection ID), the ciphertext of the inner datagram (all of it but its
-- first byte, destination ID and CRC32C, which the header says or the tag
-- replaces) and a 16-byte AEAD tag. Only that header can be shown:
-- sequence numbers, flags and options are inside the ciphertext, so the
-- analysis below covers plaintext datagrams only.
-- The security layer's own control segments (a path challenge or
-- response, a client's stateless reset token: options 66-68 of an inner
-- datagram with no flag set) are sealed like every later datagram and
-- show as such; a stateless reset, from a server or a client, is told
-- only by its size.
-- ALERT is an 8-byte plaintext refusal (form, code, detail, reserved,
-- destination connection ID).
--
-- Analysis, per connection (found by connection IDs, not addresses):
-- relative sequence and acknowledgment numbers (from each side's SYN),
-- the next sequence number, retransmissions (data at or below the highest
-- sequence number that side already sent), duplicate ACKs, zero windows.
-- Install: `gannet wireshark` prints where this file is and where it goes.

local gannet = Proto("gannet", "Gannet Transport")

local VERSION = 3
local SHORT_FORM = 0x80 + VERSION
local HEADER_SIZE = 24
local SHORT_SIZE = 20
local TRAILER_SIZE = 4
local PROTECTED = 0x40 + VERSION
local ALERT = 0x50 + VERSION
local PROTECTED_HEADER_SIZE = 8
local PROTECTED_TAIL = 3  -- the inner flags and bytes 2-3, at the end of the ciphertext
local RESET_SIZE = 38  -- a stateless reset: one byte less than the smallest sealed datagram
local TAG_SIZE = 16
local KEY_PHASE = 0x80  -- of the byte after the form
local PN_MASK = 0x7FFFFF  -- of the 24 bits after the form
local ALERT_SIZE = 8
local OPT_KEY_EXCHANGE = 64
local alert_names = {
    [1] = "encryption required", [2] = "peer insecure", [3] = "handshake failed",
    [4] = "mode mismatch", [5] = "malformed",
}

-- bit operations: Lua 5.2's bit32 (Wireshark up to 4.2) or 5.3+'s operators
local band, bxor, rshift
if bit32 then
    band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift
else
    band = load("return function(a, b) return a & b end")()
    bxor = load("return function(a, b) return a ~ b end")()
    rshift = load("return function(a, n) return a >> n end")()
end

-- CRC32C (Castagnoli), reflected polynomial 0x82F63B78
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) == 1 then
            c = bxor(rshift(c, 1), 0x82F63B78)
        else
            c = rshift(c, 1)
        end
    end
    crc_table[i] = c
end

local function crc32c(s)
    local crc = 0xFFFFFFFF
    local byte = string.byte
    for i = 1, #s do
        crc = bxor(crc_table[band(bxor(crc, byte(s, i)), 0xFF)], rshift(crc, 8))
    end
    return bxor(crc, 0xFFFFFFFF)
end

local flag_names = {
    [0x80] = "CWR", [0x40] = "ECE", [0x20] = "URG", [0x10] = "ACK",
    [0x08] = "PSH", [0x04] = "RST", [0x02] = "SYN", [0x01] = "FIN",
}
local flag_order = {0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01}

local f = gannet.fields
f.form = ProtoField.string("gannet.form", "Header form")
f.version = ProtoField.uint8("gannet.version", "Version", base.DEC, nil, 0x7F)
f.flags = ProtoField.uint8("gannet.flags", "Flags", base.HEX)
f.flags_cwr = ProtoField.bool("gannet.flags.cwr", "CWR", 8, nil, 0x80)
f.flags_ece = ProtoField.bool("gannet.flags.ece", "ECE", 8, nil, 0x40)
f.flags_urg = ProtoField.bool("gannet.flags.urg", "URG", 8, nil, 0x20)
f.flags_ack = ProtoField.bool("gannet.flags.ack", "ACK", 8, nil, 0x10)
f.flags_psh = ProtoField.bool("gannet.flags.psh", "PSH", 8, nil, 0x08)
f.flags_rst = ProtoField.bool("gannet.flags.rst", "RST", 8, nil, 0x04)
f.flags_syn = ProtoField.bool("gannet.flags.syn", "SYN", 8, nil, 0x02)
f.flags_fin = ProtoField.bool("gannet.flags.fin", "FIN", 8, nil, 0x01)
f.flags_str = ProtoField.string("gannet.flags.str", "Flags (text)")
f.hdr_len = ProtoField.uint16("gannet.hdr_len", "Header length", base.DEC)
f.dst_cid = ProtoField.uint32("gannet.dcid", "Destination connection ID", base.HEX)
f.src_cid = ProtoField.uint32("gannet.scid", "Source connection ID", base.HEX)
f.cid = ProtoField.uint32("gannet.cid", "Connection ID", base.HEX)
f.seq_raw = ProtoField.uint32("gannet.seq_raw", "Sequence number (raw)", base.DEC)
f.seq = ProtoField.uint32("gannet.seq", "Sequence number (relative)", base.DEC)
f.nxtseq = ProtoField.uint32("gannet.nxtseq", "Next sequence number (relative)", base.DEC)
f.ack_raw = ProtoField.uint32("gannet.ack_raw", "Acknowledgment number (raw)", base.DEC)
f.ack = ProtoField.uint32("gannet.ack", "Acknowledgment number (relative)", base.DEC)
f.window = ProtoField.uint16("gannet.window", "Window", base.DEC)
f.reserved = ProtoField.uint16("gannet.reserved", "Reserved", base.HEX)
f.tsval = ProtoField.uint32("gannet.tsval", "TSval (us)", base.DEC)
f.tsecr = ProtoField.uint32("gannet.tsecr", "TSecr (us)", base.DEC)
f.options = ProtoField.bytes("gannet.options", "Options")
f.opt_kind = ProtoField.uint8("gannet.option.kind", "Kind", base.DEC)
f.opt_len = ProtoField.uint8("gannet.option.len", "Length", base.DEC)
f.mss = ProtoField.uint16("gannet.option.mss", "MSS", base.DEC)
f.wscale = ProtoField.uint8("gannet.option.wscale", "Window scale", base.DEC)
f.sack_perm = ProtoField.none("gannet.option.sack_perm", "SACK permitted")
f.sack_le = ProtoField.uint32("gannet.option.sack.le", "SACK left edge (relative)", base.DEC)
f.sack_re = ProtoField.uint32("gannet.option.sack.re", "SACK right edge (relative)", base.DEC)
f.mode = ProtoField.uint8("gannet.option.mode", "Operation mode", base.DEC, {[0] = "burst", [1] = "step-by-step"})
f.max_packet = ProtoField.uint16("gannet.option.max_packet", "Max packet size", base.DEC)
f.key_exchange = ProtoField.bytes("gannet.option.key_exchange", "Key exchange")
f.key_exchange_len = ProtoField.uint8("gannet.option.key_exchange.len", "Key exchange length", base.DEC)
f.unknown_opt = ProtoField.bytes("gannet.option.unknown", "Unknown option")
f.len = ProtoField.uint32("gannet.len", "Payload length", base.DEC)
f.payload = ProtoField.bytes("gannet.payload", "Payload")
f.crc = ProtoField.uint32("gannet.crc", "CRC32C", base.HEX)
f.crc_status = ProtoField.string("gannet.crc.status", "CRC32C status")
f.crc_good = ProtoField.bool("gannet.crc.good", "CRC32C good")
f.retrans = ProtoField.none("gannet.analysis.retransmission", "This is a retransmission")
f.dup_ack = ProtoField.none("gannet.analysis.duplicate_ack", "Duplicate ACK")
f.zero_window = ProtoField.none("gannet.analysis.zero_window", "Zero window")
f.stream = ProtoField.uint32("gannet.stream", "Connection index", base.DEC)
f.protected = ProtoField.uint8("gannet.protected", "Protected form", base.HEX, {[PROTECTED] = "PROTECTED"})
f.key_phase = ProtoField.uint8("gannet.key_phase", "Key phase", base.DEC, nil, KEY_PHASE)
f.pn = ProtoField.uint24("gannet.pn", "Packet number (low 23 bits)", base.DEC, nil, PN_MASK)
f.encrypted = ProtoField.bytes("gannet.encrypted", "Encrypted payload")
f.encrypted_len = ProtoField.uint32("gannet.encrypted.len", "Encrypted length", base.DEC)
f.tag = ProtoField.bytes("gannet.tag", "AEAD tag")
f.alert = ProtoField.uint8("gannet.alert", "Alert", base.HEX, {[ALERT] = "ALERT"})
f.alert_code = ProtoField.uint8("gannet.alert.code", "Alert code", base.DEC, alert_names)
f.alert_detail = ProtoField.uint8("gannet.alert.detail", "Alert detail", base.DEC)
f.alert_reserved = ProtoField.uint8("gannet.alert.reserved", "Reserved", base.HEX)

local ef_bad_crc = ProtoExpert.new("gannet.crc.bad", "Bad CRC32C", expert.group.CHECKSUM, expert.severity.ERROR)
local ef_malformed = ProtoExpert.new("gannet.malformed", "Malformed Gannet datagram",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_retrans = ProtoExpert.new("gannet.analysis.retransmission.expert", "Retransmission",
    expert.group.SEQUENCE, expert.severity.NOTE)
local ef_dupack = ProtoExpert.new("gannet.analysis.duplicate_ack.expert", "Duplicate ACK",
    expert.group.SEQUENCE, expert.severity.NOTE)
local ef_zero = ProtoExpert.new("gannet.analysis.zero_window.expert", "Zero window",
    expert.group.SEQUENCE, expert.severity.WARN)
gannet.experts = {ef_bad_crc, ef_malformed, ef_retrans, ef_dupack, ef_zero}

gannet.prefs.ports = Pref.range("UDP ports", "", "UDP ports to decode as Gannet (besides the heuristic)", 65535)

-- Connection state, rebuilt on each first pass over the capture.
local peer, isn, high, last_ack, stream_of, frames, nstreams

local function reset()
    peer = {}       -- cid -> the other end's cid
    isn = {}        -- cid -> the ISN that end chose (from its SYN)
    high = {}       -- cid -> highest relative sequence end that end sent
    last_ack = {}   -- cid -> {ack, window, count} of that end's last pure ACK
    stream_of = {}  -- cid -> connection index
    frames = {}     -- frame number -> analysis results
    nstreams = 0
end
reset()
function gannet.init() reset() end

local function rel(value, base_value)
    if base_value == nil then return nil end
    return (value - base_value) % 4294967296
end

local function flags_text(flags)
    local parts = {}
    for _, bit in ipairs(flag_order) do
        if band(flags, bit) ~= 0 then parts[#parts + 1] = flag_names[bit] end
    end
    return table.concat(parts, ",")
end

local function add_flags(tree, tvbr, flags)
    local ft = tree:add(f.flags, tvbr)
    ft:append_text(" (" .. flags_text(flags) .. ")")
    for _, pf in ipairs({f.flags_cwr, f.flags_ece, f.flags_urg, f.flags_ack, f.flags_psh,
                         f.flags_rst, f.flags_syn, f.flags_fin}) do
        ft:add(pf, tvbr)
    end
    tree:add(f.flags_str, flags_text(flags)):set_generated()
end

-- Options of a long header: kind (1) | length of value (1) | value; 0 ends, 1 is a NOP.
local function dissect_options(tvb, tree, offset, stop, info)
    local ot = tree:add(f.options, tvb(offset, stop - offset))
    while offset < stop do
        local kind = tvb(offset, 1):uint()
        if kind == 0 then break end
        if kind == 1 then
            offset = offset + 1
        else
            if offset + 2 > stop then return false end
            local len = tvb(offset + 1, 1):uint()
            if offset + 2 + len > stop then return false end
            local v = tvb(offset + 2, len)
            local sub
            if kind == 2 and len == 2 then
                sub = ot:add(f.mss, v); info.mss = v:uint()
            elseif kind == 3 and len == 1 then
                sub = ot:add(f.wscale, v)
            elseif kind == 4 and len == 0 then
                sub = ot:add(f.sack_perm, tvb(offset, 2))
            elseif kind == 5 and len % 8 == 0 and len >= 8 and len <= 32 then
                sub = ot:add(tvb(offset, 2 + len), "SACK")
                info.sack = {}
                for i = 0, len / 8 - 1 do
                    local le = v(i * 8, 4):uint()
                    local re = v(i * 8 + 4, 4):uint()
                    info.sack[#info.sack + 1] = {le, re, v(i * 8, 4), v(i * 8 + 4, 4)}
                end
            elseif kind == 8 and len == 8 then
                sub = ot:add(tvb(offset, 2 + len), "Timestamps")
                sub:add(f.tsval, v(0, 4)); sub:add(f.tsecr, v(4, 4))
            elseif kind == 32 and len == 1 then
                sub = ot:add(f.mode, v)
            elseif kind == 33 and len == 2 then
                sub = ot:add(f.max_packet, v)
            elseif kind == OPT_KEY_EXCHANGE then
                sub = ot:add(tvb(offset, 2 + len), "Key exchange (option 64), " .. len .. " bytes")
                sub:add(f.opt_kind, tvb(offset, 1)); sub:add(f.key_exchange_len, tvb(offset + 1, 1))
                if len > 0 then sub:add(f.key_exchange, v) end
                info.key_exchange = len
            elseif kind >= 128 then
                return false  -- "must understand": the datagram is invalid
            else
                sub = ot:add(f.unknown_opt, tvb(offset, 2 + len))
            end
            offset = offset + 2 + len
        end
    end
    return true
end

-- The header of a PROTECTED datagram is valid when it is long enough for a
-- header, the inner flags and a tag (what gannet.wire.protected.parse_header
-- checks; every value of the other header bits is valid).
local function protected_header_ok(tvb)
    if tvb:len() < PROTECTED_HEADER_SIZE + PROTECTED_TAIL + TAG_SIZE then return false end
    return tvb(0, 1):uint() == PROTECTED
end

local function alert_ok(tvb)
    return tvb:len() == ALERT_SIZE and tvb(0, 1):uint() == ALERT and tvb(3, 1):uint() == 0
end

local function dissect_protected(tvb, pinfo, root)
    local n = tvb:len()
    pinfo.cols.protocol = "Gannet"
    local tree = root:add(gannet, tvb())
    tree:add(f.form, tvb(0, 1), "protected")
    tree:add(f.protected, tvb(0, 1))
    if not protected_header_ok(tvb) then
        tree:add_proto_expert_info(ef_malformed, "not a valid protected header")
        pinfo.cols.info = "[Malformed] protected"
        return n
    end
    tree:add(f.key_phase, tvb(1, 1))
    local pn = band(tvb(1, 3):uint(), PN_MASK)
    tree:add(f.pn, tvb(1, 3))
    local dst = tvb(4, 4):uint()
    tree:add(f.dst_cid, tvb(4, 4)); tree:add(f.cid, tvb(4, 4)):set_hidden()
    local elen = n - PROTECTED_HEADER_SIZE - TAG_SIZE
    tree:add(f.encrypted_len, elen):set_generated()
    if elen > 0 then
        tree:add(f.encrypted, tvb(PROTECTED_HEADER_SIZE, elen))
            :append_text(" (the inner header and payload, " .. elen .. " bytes)")
    end
    tree:add(f.tag, tvb(n - TAG_SIZE, TAG_SIZE))
    local stream = stream_of[dst]
    if stream ~= nil then tree:add(f.stream, stream):set_generated() end
    pinfo.cols.info = string.format("%08x [Encrypted] PN=%d KP=%d Len=%d", dst, pn,
        band(tvb(1, 1):uint(), KEY_PHASE) == 0 and 0 or 1, elen)
    if n <= RESET_SIZE then
        -- (only the receiver's token tells a real reset from a forged one)
        pinfo.cols.info = string.format("%08x [Stateless reset?] Len=%d", dst, n)
    end
    return n
end

local function dissect_alert(tvb, pinfo, root)
    local n = tvb:len()
    pinfo.cols.protocol = "Gannet"
    local tree = root:add(gannet, tvb())
    tree:add(f.form, tvb(0, 1), "alert")
    tree:add(f.alert, tvb(0, 1))
    if not alert_ok(tvb) then
        tree:add_proto_expert_info(ef_malformed, "not a valid alert")
        pinfo.cols.info = "[Malformed] alert"
        return n
    end
    local code = tvb(1, 1):uint()
    tree:add(f.alert_code, tvb(1, 1))
    tree:add(f.alert_detail, tvb(2, 1))
    tree:add(f.alert_reserved, tvb(3, 1))
    local dst = tvb(4, 4):uint()
    tree:add(f.dst_cid, tvb(4, 4)); tree:add(f.cid, tvb(4, 4)):set_hidden()
    local stream = stream_of[dst]
    if stream ~= nil then tree:add(f.stream, stream):set_generated() end
    pinfo.cols.info = string.format("%08x [Alert] %s (code %d, detail %d)", dst,
        alert_names[code] or "unknown", code, tvb(2, 1):uint())
    return n
end

local function dissect(tvb, pinfo, root)
    local n = tvb:len()
    if n >= 1 and tvb(0, 1):uint() == PROTECTED then return dissect_protected(tvb, pinfo, root) end
    if n >= 1 and tvb(0, 1):uint() == ALERT then return dissect_alert(tvb, pinfo, root) end
    if n < SHORT_SIZE + TRAILER_SIZE then return 0 end
    local first = tvb(0, 1):uint()
    if first ~= VERSION and first ~= SHORT_FORM then return 0 end
    pinfo.cols.protocol = "Gannet"
    local tree = root:add(gannet, tvb())
    local short = first == SHORT_FORM
    local flags, dst, src, seq, ack, wnd, hlen
    local opt = {}
    if short then
        flags = tvb(1, 1):uint(); wnd = tvb(2, 2):uint(); dst = tvb(4, 4):uint()
        seq = tvb(8, 4):uint(); ack = tvb(12, 4):uint(); hlen = SHORT_SIZE
        tree:add(f.form, tvb(0, 1), "short")
        tree:add(f.version, tvb(0, 1))
        add_flags(tree, tvb(1, 1), flags)
        tree:add(f.window, tvb(2, 2))
        tree:add(f.dst_cid, tvb(4, 4)); tree:add(f.cid, tvb(4, 4)):set_hidden()
        tree:add(f.seq_raw, tvb(8, 4)); tree:add(f.ack_raw, tvb(12, 4))
        tree:add(f.tsval, tvb(16, 4))
    else
        if n < HEADER_SIZE + TRAILER_SIZE then
            tree:add_proto_expert_info(ef_malformed, "shorter than a long header"); return n
        end
        flags = tvb(1, 1):uint(); hlen = tvb(2, 2):uint(); dst = tvb(4, 4):uint()
        src = tvb(8, 4):uint(); seq = tvb(12, 4):uint(); ack = tvb(16, 4):uint()
        wnd = tvb(20, 2):uint()
        tree:add(f.form, tvb(0, 1), "long")
        tree:add(f.version, tvb(0, 1))
        add_flags(tree, tvb(1, 1), flags)
        tree:add(f.hdr_len, tvb(2, 2))
        tree:add(f.dst_cid, tvb(4, 4)); tree:add(f.cid, tvb(4, 4)):set_hidden()
        tree:add(f.src_cid, tvb(8, 4)); tree:add(f.cid, tvb(8, 4)):set_hidden()
        tree:add(f.seq_raw, tvb(12, 4)); tree:add(f.ack_raw, tvb(16, 4))
        tree:add(f.window, tvb(20, 2)); tree:add(f.reserved, tvb(22, 2))
        if hlen < HEADER_SIZE or hlen % 4 ~= 0 or hlen > n - TRAILER_SIZE then
            tree:add_proto_expert_info(ef_malformed, "bad header length " .. hlen); return n
        end
        if hlen > HEADER_SIZE and not dissect_options(tvb, tree, HEADER_SIZE, hlen, opt) then
            tree:add_proto_expert_info(ef_malformed, "bad options"); return n
        end
    end
    local plen = n - hlen - TRAILER_SIZE
    tree:add(f.len, plen):set_generated()
    if plen > 0 then tree:add(f.payload, tvb(hlen, plen)) end

    -- CRC32C trailer, least significant byte first
    local stored = tvb(n - 4, 4):le_uint()
    local computed = crc32c(tvb:raw(0, n - 4))
    local ct = tree:add_le(f.crc, tvb(n - 4, 4))
    if stored == computed then
        ct:append_text(" [correct]")
        tree:add(f.crc_status, "Good"):set_generated()
        tree:add(f.crc_good, true):set_generated()
    else
        ct:append_text(string.format(" [incorrect, should be 0x%08x]", computed))
        tree:add(f.crc_status, "Bad"):set_generated()
        tree:add(f.crc_good, false):set_generated()
        ct:add_proto_expert_info(ef_bad_crc)
    end

    -- analysis (computed on the first pass, kept per frame)
    local a = frames[pinfo.number]
    if a == nil then
        a = {}
        if src ~= nil and src ~= 0 and dst ~= 0 then
            peer[dst] = src; peer[src] = dst
        end
        local sender = src
        if sender == nil or sender == 0 then sender = peer[dst] end
        if band(flags, 0x02) ~= 0 and src ~= nil and src ~= 0 then
            isn[src] = seq
            if stream_of[src] == nil then
                if dst ~= 0 and stream_of[dst] ~= nil then
                    stream_of[src] = stream_of[dst]
                else
                    stream_of[src] = nstreams; nstreams = nstreams + 1
                end
            end
        end
        if sender ~= nil then
            a.stream = stream_of[sender]
            a.seq = rel(seq, isn[sender])
            if band(flags, 0x10) ~= 0 and dst ~= 0 then a.ack = rel(ack, isn[dst]) end
            local seglen = plen
            if band(flags, 0x02) ~= 0 then seglen = seglen + 1 end
            if band(flags, 0x01) ~= 0 then seglen = seglen + 1 end
            if a.seq ~= nil then
                a.nxtseq = a.seq + seglen
                local h = high[sender] or 0
                if seglen > 0 and a.nxtseq <= h and band(flags, 0x02) == 0 then a.retrans = true end
                if a.nxtseq > h then high[sender] = a.nxtseq end
            end
            if seglen == 0 and band(flags, 0x15) == 0x10 then  -- a pure ACK
                local la = last_ack[sender]
                if la ~= nil and la.ack == ack and la.wnd == wnd and (high[dst] or 0) > (a.ack or 0) then
                    a.dup = true
                end
                last_ack[sender] = {ack = ack, wnd = wnd}
            else
                last_ack[sender] = nil
            end
            if wnd == 0 and band(flags, 0x06) == 0 then a.zero = true end
            if opt.sack ~= nil and dst ~= 0 then
                a.sack = {}
                for i, b in ipairs(opt.sack) do a.sack[i] = {rel(b[1], isn[dst]), rel(b[2], isn[dst])} end
            end
        end
        frames[pinfo.number] = a
    end
    if a.stream ~= nil then tree:add(f.stream, a.stream):set_generated() end
    if a.seq ~= nil then tree:add(f.seq, a.seq):set_generated() end
    if a.nxtseq ~= nil then tree:add(f.nxtseq, a.nxtseq):set_generated() end
    if a.ack ~= nil then tree:add(f.ack, a.ack):set_generated() end
    if a.sack ~= nil then
        for i, b in ipairs(a.sack) do
            if b[1] ~= nil then tree:add(f.sack_le, opt.sack[i][3], b[1]) end
            if b[2] ~= nil then tree:add(f.sack_re, opt.sack[i][4], b[2]) end
        end
    end
    if a.retrans then
        tree:add(f.retrans):set_generated(); tree:add_proto_expert_info(ef_retrans)
    end
    if a.dup then
        tree:add(f.dup_ack):set_generated(); tree:add_proto_expert_info(ef_dupack)
    end
    if a.zero then
        tree:add(f.zero_window):set_generated(); tree:add_proto_expert_info(ef_zero)
    end

    local info = string.format("%08x [%s] Seq=%s Ack=%s Win=%d Len=%d", dst, flags_text(flags),
        tostring(a.seq or seq), tostring(a.ack or ack), wnd, plen)
    if a.retrans then info = "[Retransmission] " .. info end
    if a.dup then info = "[Dup ACK] " .. info end
    if stored ~= computed then info = "[Bad CRC] " .. info end
    if opt.key_exchange ~= nil then info = info .. " KeyExchange=" .. opt.key_exchange end
    pinfo.cols.info = info
    return n
end

function gannet.dissector(tvb, pinfo, root)
    return dissect(tvb, pinfo, root)
end

-- Heuristic: Gannet's version byte and a correct CRC32C, on any UDP port;
-- or a PROTECTED or ALERT datagram whose header is valid (they have no CRC:
-- the tag, which only the keys can check, does its job).
local function heuristic(tvb, pinfo, root)
    local n = tvb:len()
    if protected_header_ok(tvb) or alert_ok(tvb) then
        dissect(tvb, pinfo, root)
        pinfo.conversation = gannet
        return true
    end
    if n < SHORT_SIZE + TRAILER_SIZE then return false end
    local first = tvb(0, 1):uint()
    if first ~= VERSION and first ~= SHORT_FORM then return false end
    if crc32c(tvb:raw(0, n - 4)) ~= tvb(n - 4, 4):le_uint() then return false end
    dissect(tvb, pinfo, root)
    pinfo.conversation = gannet
    return true
end

gannet:register_heuristic("udp", heuristic)
DissectorTable.get("udp.port"):add_for_decode_as(gannet)

local registered_ports = ""
function gannet.prefs_changed()
    local udp = DissectorTable.get("udp.port")
    if registered_ports ~= "" then udp:remove(registered_ports, gannet) end
    registered_ports = gannet.prefs.ports
    if registered_ports ~= "" then udp:add(registered_ports, gannet) end
end
