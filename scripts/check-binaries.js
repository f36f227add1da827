#!/usr/bin/env node
// Checks the prebuilt addons in npm/<platform>/ before they are published:
// each must be the right format and architecture for its platform, export the
// N-API entry point, link only libraries every target system has, and not
// need a newer glibc or macOS than the package promises. A binary that fails
// any of these installs fine and then throws at require() on the user's
// machine, where nobody can fix it, so it is caught here.
//
// The files are parsed in plain JavaScript (ELF and Mach-O headers, symbol
// tables, version needs, load commands): readelf, nm and objdump are not on
// every CI image, and the Mach-O ones never are on Linux.
//
//   node scripts/check-binaries.js                       # all six platforms
//   node scripts/check-binaries.js linux-arm64-gnu       # some of them
//   node scripts/check-binaries.js --allow-missing       # skip absent files
//   node scripts/check-binaries.js --json                # results as JSON
//
// Exit code 0 when every checked binary passes, 1 when one fails or (without
// --allow-missing) is absent, 2 on a usage error.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const BINARY = 'sse-helper-native';
const ENTRY = 'napi_register_module_v1';

/**
 * What each shipped platform's binary must be. `glibcMax` is the oldest glibc
 * the package supports (the one scripts/build-targets.js links against);
 * `minOs` is the macOS deployment target it builds for.
 */
const PLATFORMS = {
  'linux-x64-gnu': { format: 'elf', arch: 'x86_64', libc: 'gnu', glibcMax: '2.17' },
  'linux-arm64-gnu': { format: 'elf', arch: 'arm64', libc: 'gnu', glibcMax: '2.17' },
  'linux-x64-musl': { format: 'elf', arch: 'x86_64', libc: 'musl' },
  'linux-arm64-musl': { format: 'elf', arch: 'arm64', libc: 'musl' },
  'darwin-x64': { format: 'macho', arch: 'x86_64', minOs: '10.13' },
  'darwin-arm64': { format: 'macho', arch: 'arm64', minOs: '11.0' },
  // napi-rs names the official (MSVC-built) Node's package win32-x64-msvc;
  // the binary is zig's gnu build against the same Universal CRT.
  'win32-x64-msvc': { format: 'pe', arch: 'x86_64', crt: 'ucrt' },
};

// Sonames every glibc system has: the C runtime's own libraries and the
// unwinder Rust's std links. Anything else (libstdc++, libssl, libnode...)
// may be missing on the user's machine or be the wrong version.
const GNU_LIBS = [
  /^libc\.so\.6$/,
  /^libm\.so\.6$/,
  /^libdl\.so\.2$/,
  /^libpthread\.so\.0$/,
  /^librt\.so\.1$/,
  /^libgcc_s\.so\.1$/,
  /^ld-linux-[\w.-]+\.so\.\d+$/,
];
// musl has one libc.so for libc, libm, libdl, libpthread and librt. Alpine
// names it libc.musl-<arch>.so.1 (its loader is ld-musl-<arch>.so.1); zig and
// plain musl-gcc link it as libc.so. A cdylib without static CRT takes its
// unwinder from libgcc_s, which Alpine's Node images install (Node needs it).
const MUSL_LIBS = [/^libc\.musl-[\w-]+\.so\.1$/, /^libc\.so$/, /^ld-musl-[\w-]+\.so\.1$/, /^libgcc_s\.so\.1$/];
// libSystem is the whole C runtime on macOS. Rust's standard library for
// Apple targets also links libiconv (and zig's link of it, libcharset):
// both are part of every macOS in /usr/lib, and no symbol of ours binds to
// them. Anything else (libc++, OpenSSL, a framework) would not be there.
const DARWIN_LIBS = [
  /^\/usr\/lib\/libSystem\.B\.dylib$/,
  /^\/usr\/lib\/libiconv(\.\d+)*\.dylib$/,
  /^\/usr\/lib\/libcharset(\.\d+)*\.dylib$/,
];

// DLLs every Windows 10+ has: the kernel, Winsock, the Universal CRT's
// api-ms-win-crt-* forwarders, the API sets Rust's std uses
// (api-ms-win-core-synch for WaitOnAddress), bcryptprimitives (ProcessPrng,
// std's random source), and node.exe itself, the process that loads the
// addon and exports napi_*. Anything else (msvcrt.dll, vcruntime140.dll,
// libgcc_s_seh-1.dll, libwinpthread-1.dll, libnode.dll) may be missing or
// be another C runtime.
const WINDOWS_DLLS = [
  /^kernel32\.dll$/i,
  /^ntdll\.dll$/i,
  /^ws2_32\.dll$/i,
  /^advapi32\.dll$/i,
  /^userenv\.dll$/i,
  /^bcrypt\.dll$/i,
  /^bcryptprimitives\.dll$/i,
  /^api-ms-win-crt-[a-z]+-l1-1-0\.dll$/i,
  /^api-ms-win-core-[a-z]+-l1-[12]-[0-9]\.dll$/i,
  /^ucrtbase\.dll$/i,
  /^node\.exe$/i,
];

/** Bounds-checked view: a truncated or corrupt file must fail loudly, not read zeros. */
function view(buf, offset, size, what) {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0) {
    throw new Error(`${what}: bad offset ${offset} or size ${size}`);
  }
  if (offset + size > buf.length) {
    throw new Error(`${what}: bytes ${offset}..${offset + size} lie beyond the end of the file (${buf.length})`);
  }
  return buf.subarray(offset, offset + size);
}

/** A NUL-terminated string at `offset` in a string table. */
function cstring(table, offset, what) {
  if (offset >= table.length) throw new Error(`${what}: string offset ${offset} outside its table`);
  const end = table.indexOf(0, offset);
  return table.toString('latin1', offset, end === -1 ? table.length : end);
}

function u64(buf, offset) {
  const value = buf.readBigUInt64LE(offset);
  // Offsets and sizes in a file we have read into memory fit easily; anything
  // larger is corruption and must not silently lose precision.
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`64-bit value at ${offset} is implausibly large`);
  return Number(value);
}

/** Compares dotted version strings numerically ('2.2.5' < '2.17'). */
function compareVersions(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

// ---------------------------------------------------------------- ELF

const ELF_MACHINES = { 3: 'x86', 40: 'arm', 62: 'x86_64', 183: 'arm64' };
const SHT_DYNAMIC = 6;
const SHT_DYNSYM = 11;
const SHT_SYMTAB = 2;
const SHT_GNU_VERNEED = 0x6ffffffe;
const DT_NEEDED = 1;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
const DT_SONAME = 14;
const DT_TEXTREL = 22;
const DT_FLAGS = 30;
const DF_TEXTREL = 0x4;
const PT_GNU_STACK = 0x6474e551;
const PF_X = 1;
const STB_GLOBAL = 1;
const STB_WEAK = 2;
const STT_FUNC = 2;

function sectionHeaders(buf) {
  const shoff = u64(buf, 0x28);
  const shentsize = buf.readUInt16LE(0x3a);
  let shnum = buf.readUInt16LE(0x3c);
  let shstrndx = buf.readUInt16LE(0x3e);
  if (shoff === 0) return [];
  const read = (i) => {
    const h = view(buf, shoff + i * shentsize, 64, `section header ${i}`);
    return {
      nameOffset: h.readUInt32LE(0),
      type: h.readUInt32LE(4),
      offset: u64(h, 24),
      size: u64(h, 32),
      link: h.readUInt32LE(40),
      info: h.readUInt32LE(44),
      entsize: u64(h, 56),
    };
  };
  // Extended numbering: with 0xff00 or more sections the real counts live in
  // section 0. Never the case for an addon, but cheap to get right.
  if (shnum === 0) shnum = read(0).size;
  if (shstrndx === 0xffff) shstrndx = read(0).link;
  const sections = Array.from({ length: shnum }, (_, i) => read(i));
  const names = sections[shstrndx] ? view(buf, sections[shstrndx].offset, sections[shstrndx].size, '.shstrtab') : null;
  for (const s of sections) s.name = names ? cstring(names, s.nameOffset, 'section name') : '';
  return sections;
}

function sectionData(buf, section) {
  // SHT_NOBITS (.bss) has no bytes in the file.
  return section.type === 8 ? Buffer.alloc(0) : view(buf, section.offset, section.size, section.name || 'section');
}

function elfSymbols(buf, sections, section) {
  const data = sectionData(buf, section);
  const strtab = sectionData(buf, sections[section.link]);
  const entsize = section.entsize || 24;
  const symbols = [];
  for (let off = 0; off + 24 <= data.length; off += entsize) {
    const info = data[off + 4];
    symbols.push({
      name: cstring(strtab, data.readUInt32LE(off), 'symbol name'),
      bind: info >> 4,
      type: info & 0xf,
      visibility: data[off + 5] & 3,
      shndx: data.readUInt16LE(off + 6),
    });
  }
  return symbols;
}

/** Every version a binary needs from each library, from SHT_GNU_verneed: { 'libc.so.6': ['GLIBC_2.2.5', ...] }. */
function elfVersionNeeds(buf, sections, section) {
  const data = sectionData(buf, section);
  const strtab = sectionData(buf, sections[section.link]);
  const needs = {};
  let off = 0;
  // sh_info holds the entry count; the vn_next chain is bounded by it so a
  // corrupt self-loop cannot spin forever.
  for (let i = 0; i < section.info; i++) {
    const file = cstring(strtab, data.readUInt32LE(off + 4), 'verneed file');
    const count = data.readUInt16LE(off + 2);
    if (!needs[file]) needs[file] = [];
    const versions = needs[file];
    let aux = off + data.readUInt32LE(off + 8);
    for (let j = 0; j < count; j++) {
      versions.push(cstring(strtab, data.readUInt32LE(aux + 8), 'vernaux name'));
      const next = data.readUInt32LE(aux + 12);
      if (next === 0) break;
      aux += next;
    }
    const next = data.readUInt32LE(off + 12);
    if (next === 0) break;
    off += next;
  }
  return needs;
}

function inspectElf(buf) {
  if (buf[4] !== 2 || buf[5] !== 1) {
    return { format: 'elf', arch: null, error: `not 64-bit little-endian (class ${buf[4]}, data ${buf[5]})` };
  }
  const machine = buf.readUInt16LE(0x12);
  const info = {
    format: 'elf',
    arch: ELF_MACHINES[machine] ?? `e_machine ${machine}`,
    machine,
    // ET_DYN (3): a shared object, which dlopen() needs.
    type: buf.readUInt16LE(0x10),
    exportsRegister: false,
    glibcMax: null,
    versionNeeds: {},
    needed: [],
    soname: null,
    runpath: [],
    textrel: false,
    execStack: false,
    hasSymtab: false,
    minOs: null,
  };

  const phoff = u64(buf, 0x20);
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = view(buf, phoff + i * phentsize, 56, `program header ${i}`);
    // glibc 2.41 refuses to dlopen a library that asks for an executable stack.
    if (ph.readUInt32LE(0) === PT_GNU_STACK) info.execStack = (ph.readUInt32LE(4) & PF_X) !== 0;
  }

  const sections = sectionHeaders(buf);
  if (sections.length === 0) {
    info.error = 'no section headers (sstrip-ed?): cannot read the dynamic symbols';
    return info;
  }
  for (const section of sections) {
    if (section.type === SHT_SYMTAB) info.hasSymtab = true;
    if (section.type === SHT_DYNSYM) {
      const symbols = elfSymbols(buf, sections, section);
      // What dlsym() can find: defined, global or weak, not hidden or internal.
      info.exportCount = symbols.filter(
        (s) => s.shndx !== 0 && (s.bind === STB_GLOBAL || s.bind === STB_WEAK) && (s.visibility & 1) === 0,
      ).length;
      const register = symbols.find((s) => s.name === ENTRY);
      // Defined (not SHN_UNDEF), visible to dlsym (global or weak, default or
      // protected visibility) and a function.
      info.exportsRegister =
        !!register &&
        register.shndx !== 0 &&
        (register.bind === STB_GLOBAL || register.bind === STB_WEAK) &&
        (register.visibility === 0 || register.visibility === 3) &&
        register.type === STT_FUNC;
      if (register) info.registerSymbol = { bind: register.bind, type: register.type, shndx: register.shndx };
    }
    if (section.type === SHT_GNU_VERNEED) info.versionNeeds = elfVersionNeeds(buf, sections, section);
    if (section.type === SHT_DYNAMIC) {
      const data = sectionData(buf, section);
      const strtab = sectionData(buf, sections[section.link]);
      for (let off = 0; off + 16 <= data.length; off += 16) {
        const tag = Number(data.readBigInt64LE(off));
        if (tag === 0) break;
        const value = u64(data, off + 8);
        if (tag === DT_NEEDED) info.needed.push(cstring(strtab, value, 'DT_NEEDED'));
        else if (tag === DT_SONAME) info.soname = cstring(strtab, value, 'DT_SONAME');
        else if (tag === DT_RPATH || tag === DT_RUNPATH) info.runpath.push(cstring(strtab, value, 'DT_RUNPATH'));
        else if (tag === DT_TEXTREL || (tag === DT_FLAGS && value & DF_TEXTREL)) info.textrel = true;
      }
    }
  }
  const glibc = Object.values(info.versionNeeds)
    .flat()
    .filter((v) => /^GLIBC_\d+(\.\d+)*$/.test(v))
    .map((v) => v.slice('GLIBC_'.length));
  info.glibcVersions = [...new Set(glibc)].sort(compareVersions);
  info.glibcMax = info.glibcVersions.at(-1) ?? null;
  // GLIBC_PRIVATE symbols change between glibc releases without notice.
  info.glibcPrivate = Object.values(info.versionNeeds).flat().includes('GLIBC_PRIVATE');
  return info;
}

// ---------------------------------------------------------------- Mach-O

const CPU_TYPES = { 7: 'x86', 16777223: 'x86_64', 12: 'arm', 16777228: 'arm64' };
const LC_SYMTAB = 0x2;
const LC_LOAD_DYLIB = 0xc;
const LC_ID_DYLIB = 0xd;
const LC_LOAD_WEAK_DYLIB = 0x80000018;
const LC_REEXPORT_DYLIB = 0x8000001f;
const LC_LAZY_LOAD_DYLIB = 0x20;
const LC_LOAD_UPWARD_DYLIB = 0x80000023;
const LC_RPATH = 0x8000001c;
const LC_CODE_SIGNATURE = 0x1d;
const LC_VERSION_MIN_MACOSX = 0x24;
const LC_DYLD_INFO = 0x22;
const LC_DYLD_INFO_ONLY = 0x80000022;
const LC_BUILD_VERSION = 0x32;
const LC_DYLD_EXPORTS_TRIE = 0x80000033;
const PLATFORM_MACOS = 1;
const N_STAB = 0xe0;
const N_TYPE = 0x0e;
const N_SECT = 0x0e;
const N_EXT = 0x01;
const EXPORT_SYMBOL_FLAGS_REEXPORT = 0x08;

/** Decodes a packed xxxx.yy.zz version: 0x000a0d00 is 10.13 (a zero patch level is left off). */
function machoVersion(v) {
  const parts = [v >>> 16, (v >>> 8) & 0xff];
  if (v & 0xff) parts.push(v & 0xff);
  return parts.join('.');
}

function uleb(buf, state) {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (state.pos >= buf.length) throw new Error('exports trie: ULEB128 runs past the end');
    const byte = buf[state.pos++];
    result += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return result;
    shift += 7;
    if (shift > 63) throw new Error('exports trie: ULEB128 too long');
  }
}

/** Follows the exports trie (what dlsym() consults) along `name`; true when it ends at a non-re-exported symbol. */
function trieExports(trie, name) {
  let node = 0;
  let rest = name;
  // Each step consumes at least one character of the name, so this ends.
  for (let steps = 0; steps <= name.length; steps++) {
    const state = { pos: node };
    const terminalSize = uleb(trie, state);
    const children = state.pos + terminalSize;
    if (rest === '') {
      if (terminalSize === 0) return false;
      return (uleb(trie, state) & EXPORT_SYMBOL_FLAGS_REEXPORT) === 0;
    }
    state.pos = children;
    if (state.pos >= trie.length) return false;
    const count = trie[state.pos++];
    let next = null;
    for (let i = 0; i < count; i++) {
      const end = trie.indexOf(0, state.pos);
      if (end === -1) throw new Error('exports trie: unterminated edge label');
      const label = trie.toString('latin1', state.pos, end);
      state.pos = end + 1;
      const offset = uleb(trie, state);
      if (next === null && label !== '' && rest.startsWith(label)) next = { offset, label };
    }
    if (next === null) return false;
    if (next.offset >= trie.length) throw new Error('exports trie: child offset beyond the trie');
    node = next.offset;
    rest = rest.slice(next.label.length);
  }
  return false;
}

/** How many symbols the exports trie holds: its terminal nodes, each visited once. */
function trieCount(trie) {
  const seen = new Set();
  const stack = [0];
  let count = 0;
  while (stack.length) {
    const node = stack.pop();
    if (seen.has(node)) continue;
    seen.add(node);
    const state = { pos: node };
    const terminalSize = uleb(trie, state);
    if (terminalSize > 0) count++;
    state.pos += terminalSize;
    if (state.pos >= trie.length) continue;
    const children = trie[state.pos++];
    for (let i = 0; i < children; i++) {
      const end = trie.indexOf(0, state.pos);
      if (end === -1) throw new Error('exports trie: unterminated edge label');
      state.pos = end + 1;
      const child = uleb(trie, state);
      if (child >= trie.length) throw new Error('exports trie: child offset beyond the trie');
      stack.push(child);
    }
  }
  return count;
}

/**
 * Verifies the embedded code signature's page hashes. macOS on Apple silicon
 * kills a process that maps a library whose signature is missing or does not
 * match its bytes, which is what editing a linked binary (strip, install_name
 * changes) without re-signing leads to.
 */
function verifyCodeSignature(buf, dataoff, datasize) {
  const blob = view(buf, dataoff, datasize, 'code signature');
  // Signature blobs are big-endian, unlike the rest of the file.
  if (blob.readUInt32BE(0) !== 0xfade0cc0) return { valid: false, reason: 'not an embedded signature SuperBlob' };
  const count = blob.readUInt32BE(8);
  for (let i = 0; i < count; i++) {
    const type = blob.readUInt32BE(12 + i * 8);
    const offset = blob.readUInt32BE(16 + i * 8);
    if (type !== 0) continue; // CSSLOT_CODEDIRECTORY
    const cd = blob.subarray(offset);
    if (cd.readUInt32BE(0) !== 0xfade0c02) return { valid: false, reason: 'bad CodeDirectory magic' };
    const flags = cd.readUInt32BE(12);
    const hashOffset = cd.readUInt32BE(16);
    const nCodeSlots = cd.readUInt32BE(28);
    const codeLimit = cd.readUInt32BE(32);
    const hashSize = cd[36];
    const hashType = cd[37];
    const pageSize = 2 ** cd[39];
    const algorithm = { 1: 'sha1', 2: 'sha256' }[hashType];
    if (!algorithm) return { valid: false, reason: `unsupported hash type ${hashType}` };
    for (let page = 0; page < nCodeSlots; page++) {
      const start = page * pageSize;
      const bytes = view(buf, start, Math.min(pageSize, codeLimit - start), `signed page ${page}`);
      const want = cd.subarray(hashOffset + page * hashSize, hashOffset + (page + 1) * hashSize);
      const got = crypto.createHash(algorithm).update(bytes).digest().subarray(0, hashSize);
      if (!got.equals(want)) return { valid: false, reason: `page ${page} does not match its hash` };
    }
    // CS_ADHOC (0x2): signed without an identity, as linkers do; enough to load.
    return { valid: true, adhoc: (flags & 0x2) !== 0, pages: nCodeSlots };
  }
  return { valid: false, reason: 'no CodeDirectory' };
}

function inspectMacho(buf) {
  const cputype = buf.readUInt32LE(4);
  const info = {
    format: 'macho',
    arch: CPU_TYPES[cputype] ?? `cputype 0x${cputype.toString(16)}`,
    cputype,
    // MH_DYLIB (6) or MH_BUNDLE (8) both load with dlopen().
    filetype: buf.readUInt32LE(12),
    exportsRegister: false,
    registerInSymtab: null,
    registerInTrie: null,
    needed: [],
    installName: null,
    rpaths: [],
    minOs: null,
    minOsSource: null,
    platform: null,
    sdk: null,
    symbols: null,
    codeSignature: null,
    glibcMax: null,
  };
  const ncmds = buf.readUInt32LE(16);
  let off = 32;
  let trie = null;
  for (let i = 0; i < ncmds; i++) {
    const head = view(buf, off, 8, `load command ${i}`);
    const cmd = head.readUInt32LE(0);
    const size = head.readUInt32LE(4);
    if (size < 8) throw new Error(`load command ${i}: size ${size}`);
    const lc = view(buf, off, size, `load command ${i} (0x${cmd.toString(16)})`);
    const lcString = (at) => cstring(lc, lc.readUInt32LE(at), 'load command string');
    switch (cmd) {
      case LC_LOAD_DYLIB:
      case LC_LOAD_WEAK_DYLIB:
      case LC_REEXPORT_DYLIB:
      case LC_LAZY_LOAD_DYLIB:
      case LC_LOAD_UPWARD_DYLIB:
        info.needed.push(lcString(8));
        break;
      case LC_ID_DYLIB:
        info.installName = lcString(8);
        break;
      case LC_RPATH:
        info.rpaths.push(lcString(8));
        break;
      case LC_BUILD_VERSION:
        info.platform = lc.readUInt32LE(8);
        info.minOs = machoVersion(lc.readUInt32LE(12));
        info.sdk = machoVersion(lc.readUInt32LE(16));
        info.minOsSource = 'LC_BUILD_VERSION';
        break;
      case LC_VERSION_MIN_MACOSX:
        info.platform = PLATFORM_MACOS;
        info.minOs = machoVersion(lc.readUInt32LE(8));
        info.sdk = machoVersion(lc.readUInt32LE(12));
        info.minOsSource = 'LC_VERSION_MIN_MACOSX';
        break;
      case LC_DYLD_INFO:
      case LC_DYLD_INFO_ONLY:
        if (lc.readUInt32LE(44) > 0) trie = view(buf, lc.readUInt32LE(40), lc.readUInt32LE(44), 'exports trie');
        break;
      case LC_DYLD_EXPORTS_TRIE:
        if (lc.readUInt32LE(12) > 0) trie = view(buf, lc.readUInt32LE(8), lc.readUInt32LE(12), 'exports trie');
        break;
      case LC_CODE_SIGNATURE:
        info.codeSignature = verifyCodeSignature(buf, lc.readUInt32LE(8), lc.readUInt32LE(12));
        break;
      case LC_SYMTAB: {
        const [symoff, nsyms, stroff, strsize] = [8, 12, 16, 20].map((at) => lc.readUInt32LE(at));
        const table = view(buf, symoff, nsyms * 16, 'symbol table');
        const strings = view(buf, stroff, strsize, 'string table');
        const counts = { total: nsyms, local: 0, external: 0, undefined: 0 };
        info.registerInSymtab = false;
        for (let s = 0; s < nsyms; s++) {
          const type = table[s * 16 + 4];
          if (type & N_STAB) continue; // debugging entries
          if ((type & N_TYPE) !== N_SECT) counts.undefined++;
          else if (type & N_EXT) counts.external++;
          else counts.local++;
          if ((type & N_TYPE) === N_SECT && type & N_EXT) {
            if (cstring(strings, table.readUInt32LE(s * 16), 'symbol name') === `_${ENTRY}`) {
              info.registerInSymtab = true;
            }
          }
        }
        info.symbols = counts;
        break;
      }
    }
    off += size;
  }
  if (trie) {
    info.registerInTrie = trieExports(trie, `_${ENTRY}`);
    info.exportCount = trieCount(trie);
  } else {
    info.exportCount = info.symbols?.external ?? 0;
  }
  // dlsym() looks in the exports trie when there is one; the symbol table
  // stands in for it only in binaries too old to have one.
  info.exportsRegister = info.registerInTrie ?? info.registerInSymtab ?? false;
  return info;
}

// ---------------------------------------------------------------- PE (Windows)

const PE_MACHINES = { 332: 'x86', 34404: 'x86_64', 43620: 'arm64' };
const IMAGE_FILE_DLL = 0x2000;
const PE32_PLUS = 0x20b;
const DIRECTORY_EXPORT = 0;
const DIRECTORY_IMPORT = 1;

/**
 * The headers, exports and imports of a 64-bit PE file (a DLL or node.exe):
 * { machine, arch, dll, exports: [names], imports: { dll: [names] } }.
 * Imports by ordinal are listed as '#<n>'.
 */
function peInfo(buf) {
  if (buf.length < 64 || buf.toString('latin1', 0, 2) !== 'MZ') throw new Error('not a PE file (no MZ header)');
  const pe = buf.readUInt32LE(0x3c);
  if (view(buf, pe, 4, 'PE signature').toString('latin1') !== 'PE\0\0') throw new Error('no PE signature');
  const coff = view(buf, pe + 4, 20, 'COFF header');
  const machine = coff.readUInt16LE(0);
  const sectionCount = coff.readUInt16LE(2);
  const optionalSize = coff.readUInt16LE(16);
  const characteristics = coff.readUInt16LE(18);
  const optional = view(buf, pe + 24, optionalSize, 'optional header');
  if (optional.readUInt16LE(0) !== PE32_PLUS)
    throw new Error(`optional header magic ${optional.readUInt16LE(0)}, not PE32+`);
  const directories = [];
  const directoryCount = optional.readUInt32LE(108);
  for (let i = 0; i < directoryCount && 112 + i * 8 + 8 <= optional.length; i++) {
    directories.push({ rva: optional.readUInt32LE(112 + i * 8), size: optional.readUInt32LE(116 + i * 8) });
  }
  const sections = [];
  for (let i = 0; i < sectionCount; i++) {
    const h = view(buf, pe + 24 + optionalSize + i * 40, 40, `section header ${i}`);
    sections.push({
      name: h.toString('latin1', 0, 8).replace(/\0+$/, ''),
      va: h.readUInt32LE(12),
      span: Math.max(h.readUInt32LE(8), h.readUInt32LE(16)),
      raw: h.readUInt32LE(20),
    });
  }
  /** The file offset of a relative virtual address. */
  const offsetOf = (rva, what) => {
    const s = sections.find((x) => rva >= x.va && rva < x.va + x.span);
    if (!s) throw new Error(`${what}: RVA 0x${rva.toString(16)} is in no section`);
    return rva - s.va + s.raw;
  };
  const name = (rva, what) => cstring(buf, offsetOf(rva, what), what);

  const exports = [];
  const exportDir = directories[DIRECTORY_EXPORT];
  if (exportDir?.rva) {
    const dir = view(buf, offsetOf(exportDir.rva, 'export directory'), 40, 'export directory');
    const count = dir.readUInt32LE(24);
    const names = offsetOf(dir.readUInt32LE(32), 'export names');
    for (let i = 0; i < count; i++)
      exports.push(name(view(buf, names + i * 4, 4, 'export name').readUInt32LE(0), 'export'));
  }
  const imports = {};
  const importDir = directories[DIRECTORY_IMPORT];
  if (importDir?.rva) {
    // Bounded by the directory's size: a missing terminator cannot run on.
    for (let at = offsetOf(importDir.rva, 'import directory'), i = 0; i < importDir.size / 20; i++, at += 20) {
      const d = view(buf, at, 20, 'import descriptor');
      const lookup = d.readUInt32LE(0) || d.readUInt32LE(16);
      if (lookup === 0 && d.readUInt32LE(12) === 0) break;
      const dll = name(d.readUInt32LE(12), 'import DLL name');
      if (!imports[dll]) imports[dll] = [];
      const names = imports[dll];
      for (let t = offsetOf(lookup, 'import lookup table'); ; t += 8) {
        const entry = view(buf, t, 8, 'import thunk').readBigUInt64LE(0);
        if (entry === 0n) break;
        if (entry & (1n << 63n)) names.push(`#${entry & 0xffffn}`);
        else names.push(cstring(buf, offsetOf(Number(entry & 0x7fffffffn), 'import name') + 2, 'import name'));
      }
    }
  }
  return {
    machine,
    arch: PE_MACHINES[machine] ?? `machine 0x${machine.toString(16)}`,
    dll: (characteristics & IMAGE_FILE_DLL) !== 0,
    sections: sections.map((x) => x.name),
    exports,
    imports,
  };
}

function inspectPe(buf) {
  const pe = peInfo(buf);
  const imported = Object.keys(pe.imports);
  const lower = imported.map((d) => d.toLowerCase());
  return {
    format: 'pe',
    arch: pe.arch,
    machine: pe.machine,
    dll: pe.dll,
    exportsRegister: pe.exports.includes(ENTRY),
    exportCount: pe.exports.length,
    needed: imported,
    imports: pe.imports,
    // The C runtime: the Universal CRT (Windows 10's own, api-ms-win-crt-*
    // forwarders or ucrtbase.dll), which official Node uses, or the old
    // msvcrt.dll, whose heap and stdio an addon must not mix with Node's.
    crt: lower.some((d) => d.startsWith('api-ms-win-crt-') || d === 'ucrtbase.dll')
      ? 'ucrt'
      : lower.includes('msvcrt.dll')
        ? 'msvcrt'
        : 'none',
  };
}

// ---------------------------------------------------------------- API

/**
 * Reads a native binary and describes what the checks need.
 *
 * @param {string} file path of an ELF or Mach-O file
 * @returns {{ format: 'elf' | 'macho' | 'macho-universal' | 'unknown', arch: string | null,
 *   exportsRegister: boolean, glibcMax: string | null, needed: string[], minOs: string | null,
 *   error?: string, [key: string]: unknown }} what was found; ELF adds versionNeeds, glibcVersions,
 *   glibcPrivate, soname, runpath, textrel, execStack, hasSymtab; Mach-O adds registerInSymtab,
 *   registerInTrie, installName, rpaths, minOsSource, sdk, symbols and codeSignature.
 * @throws {Error} when the file cannot be read or its structures run past its end
 */
function inspect(file) {
  const buf = fs.readFileSync(file);
  const base = {
    file,
    size: buf.length,
    exportsRegister: false,
    exportCount: 0,
    glibcMax: null,
    needed: [],
    minOs: null,
  };
  if (buf.length < 64) return { ...base, format: 'unknown', arch: null, error: `only ${buf.length} bytes` };
  if (buf.readUInt32BE(0) === 0x7f454c46) return { ...base, ...inspectElf(buf) };
  if (buf.readUInt32LE(0) === 0xfeedfacf) return { ...base, ...inspectMacho(buf) };
  // Fat binaries are big-endian; npm ships one thin binary per platform.
  if (buf.readUInt32BE(0) === 0xcafebabe) {
    return { ...base, format: 'macho-universal', arch: null, error: 'universal (fat) Mach-O, not a thin binary' };
  }
  if (buf.readUInt32LE(0) === 0xfeedface) return { ...base, format: 'macho', arch: null, error: '32-bit Mach-O' };
  if (buf.toString('latin1', 0, 2) === 'MZ') return { ...base, ...inspectPe(buf) };
  const magic = buf.subarray(0, 4).toString('hex');
  return { ...base, format: 'unknown', arch: null, error: `unrecognised magic ${magic}` };
}

/**
 * Checks one binary against what its platform package promises.
 *
 * @param {string} platform one of linux-x64-gnu, linux-arm64-gnu, linux-x64-musl, linux-arm64-musl,
 *   darwin-x64, darwin-arm64
 * @param {string} file path of the binary
 * @returns {{ ok: boolean, problems: string[], warnings: string[], info: object | null }} `problems`
 *   make it fail; `warnings` are worth a look but load fine; `info` is what {@link inspect} found
 */
function check(platform, file) {
  const want = PLATFORMS[platform];
  if (!want) throw new Error(`unknown platform ${platform} (known: ${Object.keys(PLATFORMS).join(', ')})`);
  const problems = [];
  const warnings = [];
  let info;
  try {
    info = inspect(file);
  } catch (err) {
    return { ok: false, problems: [`cannot parse: ${err.message}`], warnings, info: null };
  }
  if (info.error) problems.push(info.error);
  const formatName = { elf: 'ELF 64-bit LE', macho: 'Mach-O 64-bit', pe: 'PE32+' }[want.format];
  if (info.format !== want.format) problems.push(`format is ${info.format}, want ${formatName}`);
  else if (info.arch !== want.arch) problems.push(`architecture is ${info.arch}, want ${want.arch}`);
  // The rest judges a binary for this platform; for a wrong one it only adds noise.
  if (problems.length) return { ok: false, problems, warnings, info };

  if (!info.exportsRegister) problems.push(`does not export ${ENTRY}: Node cannot load it as an addon`);

  if (want.format === 'pe') {
    checkPe(want, info, problems, warnings);
  } else if (want.format === 'elf') {
    if (info.type !== 3) problems.push(`ELF type ${info.type}, want a shared object (ET_DYN, 3)`);
    const allowed = want.libc === 'gnu' ? GNU_LIBS : MUSL_LIBS;
    const foreign = info.needed.filter((lib) => !allowed.some((re) => re.test(lib)));
    if (foreign.length) problems.push(`links ${foreign.join(', ')}: not a ${want.libc} system library`);
    if (want.libc === 'gnu') {
      if (info.glibcMax && compareVersions(info.glibcMax, want.glibcMax) > 0) {
        const newer = info.glibcVersions.filter((v) => compareVersions(v, want.glibcMax) > 0);
        problems.push(`needs glibc ${info.glibcMax} (GLIBC_${newer.join(', GLIBC_')}), want at most ${want.glibcMax}`);
      }
      if (info.glibcPrivate) problems.push('needs GLIBC_PRIVATE symbols');
    } else {
      const glibc = [...new Set(Object.values(info.versionNeeds).flat())].filter((v) => v.startsWith('GLIBC_'));
      if (glibc.length) problems.push(`a musl binary that needs glibc versions (${glibc.join(', ')})`);
    }
    if (info.execStack) warnings.push('asks for an executable stack (glibc 2.41+ refuses to dlopen it)');
    if (info.textrel) warnings.push('has text relocations');
    if (info.runpath.length) warnings.push(`carries RPATH/RUNPATH ${info.runpath.join(':')}`);
    warnExports(info, warnings);
  } else {
    if (info.filetype !== 6 && info.filetype !== 8) problems.push(`Mach-O filetype ${info.filetype}, want a dylib`);
    const foreign = info.needed.filter((lib) => !DARWIN_LIBS.some((re) => re.test(lib)));
    if (foreign.length) problems.push(`links ${foreign.join(', ')}: only /usr/lib/libSystem.B.dylib is allowed`);
    if (!info.needed.some((lib) => DARWIN_LIBS[0].test(lib))) problems.push('does not link libSystem.B.dylib');
    if (!info.minOs) problems.push('no LC_BUILD_VERSION or LC_VERSION_MIN_MACOSX: minimum macOS unknown');
    else if (info.platform !== PLATFORM_MACOS) problems.push(`built for platform ${info.platform}, not macOS (1)`);
    else if (compareVersions(info.minOs, want.minOs) > 0) {
      problems.push(`needs macOS ${info.minOs}, want at most ${want.minOs}`);
    }
    // Stripped zig-linked dylibs have been killed by macOS (cargo-zigbuild #50).
    if (!info.symbols || info.symbols.total === 0) problems.push('stripped: no LC_SYMTAB symbols');
    if (
      info.registerInTrie !== null &&
      info.registerInSymtab !== null &&
      info.registerInTrie !== info.registerInSymtab
    ) {
      problems.push(`${ENTRY}: symbol table says ${info.registerInSymtab}, exports trie says ${info.registerInTrie}`);
    }
    if (info.codeSignature && !info.codeSignature.valid) {
      problems.push(`code signature invalid (${info.codeSignature.reason}): macOS will kill the process`);
    } else if (!info.codeSignature && want.arch === 'arm64') {
      problems.push('no code signature: macOS on Apple silicon refuses unsigned arm64 code');
    }
    if (info.rpaths.length) warnings.push(`carries LC_RPATH ${info.rpaths.join(':')}`);
    // Harmless to dlopen() by path, but it publishes the build machine's layout.
    if (info.installName?.startsWith('/') && !info.installName.startsWith('/usr/lib/')) {
      warnings.push(`install name is a build path: ${info.installName}`);
    }
    warnExports(info, warnings);
  }
  return { ok: problems.length === 0, problems, warnings, info };
}

/**
 * A Windows addon is a DLL that Node's LoadLibrary can bind: every napi_*
 * it imports must come from node.exe (the official Node exports them; a
 * libnode.dll does not exist there), it must link the Universal CRT and
 * otherwise only DLLs every Windows 10 has.
 */
function checkPe(want, info, problems, warnings) {
  if (!info.dll) problems.push('not a DLL (IMAGE_FILE_DLL unset): LoadLibrary cannot load it as an addon');
  const foreign = info.needed.filter((dll) => !WINDOWS_DLLS.some((re) => re.test(dll)));
  if (foreign.length) problems.push(`imports from ${foreign.join(', ')}: not part of every Windows 10`);
  if (info.crt !== want.crt) problems.push(`C runtime is ${info.crt}, want ${want.crt} (the official Node's)`);
  const napi = Object.entries(info.imports).flatMap(([dll, names]) =>
    names.filter((n) => /^(napi|node_api)_/.test(n)).map((n) => ({ dll, n })),
  );
  info.napiImports = napi.length;
  const elsewhere = [...new Set(napi.filter((i) => !/^node\.exe$/i.test(i.dll)).map((i) => i.dll))];
  if (elsewhere.length) problems.push(`imports napi_* from ${elsewhere.join(', ')}, want node.exe`);
  if (napi.length === 0) problems.push('imports no napi_* function: not linked against Node-API');
  // With the official node.exe at hand (scripts/platform-runtimes.js windows-node
  // caches it), every napi_* imported must be one it exports.
  const exe = nodeExe();
  if (exe) {
    const exported = new Set(peInfo(fs.readFileSync(exe)).exports);
    const unknown = napi.filter((i) => !exported.has(i.n)).map((i) => i.n);
    if (unknown.length) problems.push(`imports ${unknown.join(', ')}, which node.exe does not export`);
    info.checkedAgainst = path.relative(root, exe);
  } else {
    warnings.push(
      'node.exe not cached (node scripts/platform-runtimes.js windows-node): imports not matched to its exports',
    );
  }
  warnExports(info, warnings);
}

/** The official node.exe scripts/platform-runtimes.js cached, or null. */
function nodeExe() {
  const ready = path.join(root, '.cache', 'platforms', 'windows-node', 'ready.json');
  if (!fs.existsSync(ready)) return null;
  const { exe } = JSON.parse(fs.readFileSync(ready, 'utf8'));
  return fs.existsSync(exe) ? exe : null;
}

/**
 * An addon needs to export only its entry point. Thousands of exported Rust
 * symbols mean the linker ignored rustc's export list: a bigger, slower-loading
 * binary whose internals other code can bind to.
 */
function warnExports(info, warnings) {
  const extra = info.exportCount - (info.exportsRegister ? 1 : 0);
  if (extra > 0) warnings.push(`exports ${extra} symbol(s) besides ${ENTRY}`);
}

/** Where a platform's binary sits in the repository. */
function binaryPath(platform) {
  return path.join(root, 'npm', platform, `${BINARY}.${platform}.node`);
}

// ---------------------------------------------------------------- CLI

function summaryLine(result) {
  const { info } = result;
  if (!info) return '';
  const parts = [`${info.format} ${info.arch}`];
  if (info.format === 'elf') parts.push(info.glibcMax ? `glibc ${info.glibcMax}` : 'no glibc versions');
  if (info.minOs) parts.push(`macOS ${info.minOs}`);
  if (info.format === 'pe') parts.push(`${info.crt} C runtime`, `${info.napiImports} napi_* from node.exe`);
  parts.push(info.exportsRegister ? ENTRY : `no ${ENTRY}`);
  parts.push(`${info.exportCount} exported`);
  if (info.symbols) parts.push(`${info.symbols.total} in symtab`);
  if (info.codeSignature) parts.push(info.codeSignature.valid ? 'signed' : 'bad signature');
  parts.push(`needs ${info.needed.join(', ') || 'nothing'}`);
  return parts.join(' | ');
}

function main(argv) {
  const flags = argv.filter((a) => a.startsWith('--'));
  const names = argv.filter((a) => !a.startsWith('--'));
  const unknown = [
    ...flags.filter((f) => !['--allow-missing', '--json'].includes(f)),
    ...names.filter((n) => !PLATFORMS[n]),
  ];
  if (unknown.length) {
    console.error(`check-binaries: unknown ${unknown.join(', ')}`);
    console.error(`usage: check-binaries.js [--allow-missing] [--json] [${Object.keys(PLATFORMS).join('|')}...]`);
    return 2;
  }
  const allowMissing = flags.includes('--allow-missing');
  const platforms = names.length ? names : Object.keys(PLATFORMS);
  const results = {};
  let passed = 0;
  let failed = 0;
  let missing = 0;
  for (const platform of platforms) {
    const file = binaryPath(platform);
    if (!fs.existsSync(file)) {
      missing++;
      results[platform] = { ok: allowMissing, missing: true, problems: [`missing ${path.relative(root, file)}`] };
      continue;
    }
    results[platform] = check(platform, file);
    if (results[platform].ok) passed++;
    else failed++;
  }
  if (flags.includes('--json')) {
    console.log(JSON.stringify(results, null, 2));
  } else {
    const width = Math.max(...platforms.map((p) => p.length));
    for (const platform of platforms) {
      const result = results[platform];
      const status = result.missing ? (allowMissing ? 'skip' : 'MISSING') : result.ok ? 'ok' : 'FAIL';
      const detail = result.missing ? result.problems[0] : summaryLine(result);
      console.log(`${status.padEnd(7)} ${platform.padEnd(width)}  ${detail}`);
      for (const problem of result.missing ? [] : result.problems) console.log(`${' '.repeat(width + 10)}✗ ${problem}`);
      for (const warning of result.warnings ?? []) console.log(`${' '.repeat(width + 10)}! ${warning}`);
    }
    console.log(`\n${passed} ok, ${failed} failed, ${missing} missing${allowMissing ? ' (allowed)' : ''}`);
  }
  return failed || (missing && !allowMissing) ? 1 : 0;
}

module.exports = { inspect, check, binaryPath, compareVersions, peInfo, PLATFORMS };
if (require.main === module) process.exitCode = main(process.argv.slice(2));
