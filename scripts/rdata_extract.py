#!/usr/bin/env python3
"""Extract character vectors from an R lazy-load database (Rdata.rdb/.rdx).

Stdlib only. Used by scripts/fetch_corpus.sh to turn the Debian package
r-cran-janeaustenr (data/Rdata.rdb + data/Rdata.rdx) into plain text files.

Usage:
    python3 scripts/rdata_extract.py list  DIR/Rdata
    python3 scripts/rdata_extract.py write DIR/Rdata OUTDIR [PREFIX] [NAME ...]

`DIR/Rdata` is the database stem (the .rdx/.rdb suffixes are added).
`write` writes every character-vector object (or only the NAMEs given) as
OUTDIR/PREFIX<name>.txt, elements joined by "\\n" plus a final "\\n";
NA elements become empty lines. Text is written as UTF-8.

Formats (from R's src/main/serialize.c and src/library/base/R/lazyload.R):
  * .rdx: a gzip'ed (or, in older R, length-prefixed zlib) R serialization of
    list(variables = <named list of c(offset, length)>, references, compressed).
  * .rdb: at each (offset, length) a 4-byte big-endian uncompressed length,
    then zlib data when compressed is TRUE; when compressed is 2 or 3, a type
    byte follows the length ('Z' zlib, '2' bzip2, 'X' xz, '0' none).
  * Serialization: 'X\\n' (XDR, big-endian) then version (2 or 3), writer
    version, minimal reader version, and for version 3 the native encoding.
"""

import bz2
import gzip
import lzma
import os
import struct
import sys
import zlib

# SEXP types and special markers (serialize.c).
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
DOTSXP, VECSXP, EXPRSXP, RAWSXP, S4SXP = 17, 19, 20, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP = 247, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238

NA_INTEGER = -(2**31)
UTF8_MASK, LATIN1_MASK, BYTES_MASK = 1 << 3, 1 << 2, 1 << 1


class RFormatError(Exception):
    pass


class RObj:
    """A decoded R object: `type` (SEXP code), `value`, `attrs` (dict)."""

    def __init__(self, typ, value, attrs=None):
        self.type = typ
        self.value = value
        self.attrs = attrs or {}

    def __repr__(self):
        return "RObj(%d, %r)" % (self.type, self.value)


class Sym:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "Sym(%r)" % self.name


class Reader:
    def __init__(self, data, what):
        self.d = data
        self.p = 0
        self.what = what
        self.refs = []

    def fail(self, msg):
        raise RFormatError("%s: offset %d: %s" % (self.what, self.p, msg))

    def take(self, n):
        if n < 0 or self.p + n > len(self.d):
            self.fail("truncated (need %d bytes, have %d)" % (n, len(self.d) - self.p))
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two more ints
            hi, lo = self.int(), self.int()
            n = (hi << 32) | (lo & 0xFFFFFFFF)
        if n < 0:
            self.fail("negative length %d" % n)
        return n

    def header(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            self.fail("unsupported serialization format %r (only XDR 'X\\n')" % fmt)
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            self.fail("unsupported serialization version %d" % version)

    def attrs_of(self, pairlist):
        out = {}
        node = pairlist
        while isinstance(node, RObj) and node.type == LISTSXP:
            tag, car, cdr = node.value
            out[tag.name if isinstance(tag, Sym) else str(tag)] = car
            node = cdr
        return out

    def item(self):
        flags = self.int()
        typ = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if typ == NILVALUE_SXP:
            return None
        if typ in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                   MISSINGARG_SXP, BASENAMESPACE_SXP):
            return RObj(typ, None)
        if typ == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                self.fail("bad reference index %d" % idx)
            return self.refs[idx - 1]
        if typ in (PERSISTSXP, NAMESPACESXP, PACKAGESXP):
            if self.int() != 0:
                self.fail("unexpected persistent-name flag")
            names = [self.item() for _ in range(self.int())]
            obj = RObj(typ, names)
            self.refs.append(obj)
            return obj
        if typ == SYMSXP:
            ch = self.item()
            sym = Sym(ch.value if isinstance(ch, RObj) else ch)
            self.refs.append(sym)
            return sym
        if typ == ENVSXP:
            self.int()  # locked
            env = RObj(ENVSXP, None)
            self.refs.append(env)
            enclos, frame, hashtab, attrib = (self.item() for _ in range(4))
            env.value = (enclos, frame, hashtab)
            env.attrs = self.attrs_of(attrib)
            return env
        if typ in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            # Pairlists: iterate along the CDR chain to avoid deep recursion.
            head = None
            prev = None
            while True:
                attrs = self.attrs_of(self.item()) if has_attr else {}
                tag = self.item() if has_tag else None
                car = self.item()
                node = RObj(typ, [tag, car, None], attrs)
                if prev is None:
                    head = node
                else:
                    prev.value[2] = node
                prev = node
                # Peek at the CDR: continue the loop if it is another pairlist cell.
                save = self.p
                nflags = self.int()
                ntyp = nflags & 0xFF
                if ntyp in (LISTSXP, LANGSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP) and ntyp == typ:
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                self.p = save
                prev.value[2] = self.item()
                break
            return head
        if typ == CHARSXP:
            n = self.int()
            if n == -1:
                return RObj(CHARSXP, None)  # NA_character_
            raw = self.take(n)
            if levels & LATIN1_MASK:
                s = raw.decode("latin-1")
            elif levels & BYTES_MASK:
                s = raw.decode("utf-8", "surrogateescape")
            else:
                s = raw.decode("utf-8", "replace")
            return RObj(CHARSXP, s)
        if typ in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(">%di" % n, self.take(4 * n)))
            vals = [None if v == NA_INTEGER else v for v in vals]
            obj = RObj(typ, vals)
        elif typ == REALSXP:
            n = self.length()
            obj = RObj(typ, list(struct.unpack(">%dd" % n, self.take(8 * n))))
        elif typ == CPLXSXP:
            n = self.length()
            v = struct.unpack(">%dd" % (2 * n), self.take(16 * n))
            obj = RObj(typ, [complex(v[i], v[i + 1]) for i in range(0, 2 * n, 2)])
        elif typ == STRSXP:
            n = self.length()
            vals = []
            for _ in range(n):
                ch = self.item()
                if not isinstance(ch, RObj) or ch.type != CHARSXP:
                    self.fail("STRSXP element is not a CHARSXP")
                vals.append(ch.value)
            obj = RObj(typ, vals)
        elif typ in (VECSXP, EXPRSXP):
            n = self.length()
            obj = RObj(typ, [self.item() for _ in range(n)])
        elif typ == RAWSXP:
            n = self.length()
            obj = RObj(typ, self.take(n))
        elif typ == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            obj = self.altrep(info, state)
            obj.attrs = self.attrs_of(attr)
            return obj
        elif typ == S4SXP:
            obj = RObj(typ, None)
        else:
            self.fail("unsupported SEXP type %d" % typ)
        if has_attr:
            obj.attrs = self.attrs_of(self.item())
        return obj

    def altrep(self, info, state):
        # info is a pairlist (class symbol, package symbol, type int).
        cls = None
        if isinstance(info, RObj) and info.type == LISTSXP and isinstance(info.value[1], Sym):
            cls = info.value[1].name
        if cls == "compact_intseq" and isinstance(state, RObj):
            n, start, step = (int(x) for x in state.value)
            return RObj(INTSXP, [start + i * step for i in range(n)])
        if cls == "compact_realseq" and isinstance(state, RObj):
            n, start, step = state.value
            return RObj(REALSXP, [start + i * step for i in range(int(n))])
        if cls == "deferred_string" and isinstance(state, RObj):
            arg = state.value[1]  # (original vector, scalar info)
            if isinstance(arg, RObj):
                return RObj(STRSXP, [None if v is None else str(v) for v in arg.value])
        if cls and cls.startswith("wrap_") and isinstance(state, RObj):
            inner = state.value[0] if isinstance(state.value, list) else None
            if isinstance(inner, RObj):
                return RObj(inner.type, inner.value)
        self.fail("unsupported ALTREP class %r" % cls)


def unserialize(data, what):
    r = Reader(data, what)
    r.header()
    return r.item()


def decompress_blob(blob, ctype, what):
    """Decode one lazy-load record: 4-byte BE length, [type byte], payload."""
    if len(blob) < 4:
        raise RFormatError("%s: record too short" % what)
    n = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    if ctype in (2, 3):
        kind, body = body[:1], body[1:]
        if kind == b"Z":
            out = zlib.decompress(body)
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body)
        elif kind == b"0":
            out = body
        else:
            raise RFormatError("%s: unknown compression type byte %r" % (what, kind))
    elif ctype:
        out = zlib.decompress(body)
    else:
        out = body
    if len(out) != n:
        raise RFormatError("%s: decompressed %d bytes, header says %d" % (what, len(out), n))
    return out


def read_index(stem):
    path = stem + ".rdx"
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        data = gzip.decompress(raw)
    else:
        data = decompress_blob(raw, 1, path)
    idx = unserialize(data, path)
    if not isinstance(idx, RObj) or idx.type != VECSXP:
        raise RFormatError("%s: index is not a list" % path)
    names = idx.attrs.get("names")
    fields = dict(zip(names.value, idx.value)) if names else {}
    if "variables" not in fields:
        raise RFormatError("%s: index has no 'variables' element" % path)
    var = fields["variables"]
    vnames = var.attrs["names"].value
    variables = {}
    for name, pos in zip(vnames, var.value):
        off, ln = pos.value[:2]
        variables[name] = (int(off), int(ln))
    comp = fields.get("compressed")
    ctype = 1
    if isinstance(comp, RObj) and comp.value:
        ctype = int(comp.value[0])
    return variables, ctype


def load_objects(stem, only=None):
    variables, ctype = read_index(stem)
    path = stem + ".rdb"
    with open(path, "rb") as f:
        db = f.read()
    out = {}
    for name, (off, ln) in variables.items():
        if only and name not in only:
            continue
        if off < 0 or off + ln > len(db):
            raise RFormatError("%s: object %s at %d+%d lies outside the file (%d bytes)"
                               % (path, name, off, ln, len(db)))
        what = "%s: object %s" % (path, name)
        out[name] = unserialize(decompress_blob(db[off:off + ln], ctype, what), what)
    if only:
        missing = [n for n in only if n not in out]
        if missing:
            raise RFormatError("%s: objects not found: %s" % (stem + ".rdx", ", ".join(missing)))
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in ("list", "write"):
        sys.stderr.write(__doc__)
        return 2
    stem = argv[2]
    try:
        if argv[1] == "list":
            for name, obj in sorted(load_objects(stem).items()):
                n = len(obj.value) if isinstance(obj.value, (list, bytes)) else 0
                print("%s\ttype=%d\tlength=%d" % (name, obj.type, n))
            return 0
        if len(argv) < 4:
            sys.stderr.write(__doc__)
            return 2
        outdir = argv[3]
        prefix = argv[4] if len(argv) > 4 else ""
        only = argv[5:]
        objs = load_objects(stem, only or None)
        os.makedirs(outdir, exist_ok=True)
        for name, obj in sorted(objs.items()):
            if obj.type != STRSXP:
                if only:
                    raise RFormatError("object %s is not a character vector (type %d)"
                                       % (name, obj.type))
                continue
            text = "\n".join("" if s is None else s for s in obj.value) + "\n"
            dest = os.path.join(outdir, prefix + name + ".txt")
            with open(dest, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            print("%s\t%d lines\t%d bytes" % (dest, len(obj.value), os.path.getsize(dest)))
        return 0
    except (OSError, RFormatError, zlib.error, lzma.LZMAError, ValueError) as e:
        sys.stderr.write("rdata_extract: error: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
