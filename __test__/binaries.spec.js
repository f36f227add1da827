// The prebuilt binaries the platform packages ship (scripts/check-binaries.js
// run on each one present), and the parser itself: on the host binary, which
// every test run has, and on small hand-made Mach-O files, since the macOS
// binaries exist only where the cross toolchain does.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { inspect, check, compareVersions } = require('../scripts/check-binaries.js');

const npmDir = path.join(__dirname, '..', 'npm');
const hostBinary = path.join(__dirname, '..', 'sse-helper-native.linux-x64-gnu.node');

/** Every npm/<platform>/*.node: the directory name says what it must be. */
const shipped = fs.existsSync(npmDir)
  ? fs.readdirSync(npmDir).flatMap((platform) =>
      fs
        .readdirSync(path.join(npmDir, platform))
        .filter((f) => f.endsWith('.node'))
        .map((f) => [platform, path.join(npmDir, platform, f)]),
    )
  : [];

describe('shipped binaries under npm/*/', () => {
  if (shipped.length === 0) {
    // Cross-builds need zig and the Rust targets (scripts/build-targets.js);
    // without them there is nothing to check, which is not a failure.
    test.skip('none built here: run scripts/build-targets.js to cross-build them', () => {});
    return;
  }
  test.each(shipped)('%s passes every check', (platform, file) => {
    expect(path.basename(file)).toBe(`sse-helper-native.${platform}.node`);
    const result = check(platform, file);
    // Problems first: on failure the message then says what is wrong.
    expect(result.problems).toEqual([]);
    expect(result.ok).toBe(true);
  });
});

describe('ELF parser on the host binary', () => {
  test('an x86-64 shared object exporting the N-API entry point, linking only system libraries', () => {
    const info = inspect(hostBinary);
    expect(info.format).toBe('elf');
    expect(info.arch).toBe('x86_64');
    expect(info.machine).toBe(62);
    expect(info.type).toBe(3);
    expect(info.exportsRegister).toBe(true);
    expect(info.needed).toContain('libc.so.6');
    for (const lib of info.needed) {
      expect(lib).toMatch(
        /^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libgcc_s\.so\.1|ld-linux-.+)$/,
      );
    }
    // Whatever glibc the local toolchain linked against, it reports one.
    expect(info.glibcMax).toMatch(/^2\.\d+(\.\d+)?$/);
    expect(info.versionNeeds['libc.so.6']).toContain(`GLIBC_${info.glibcMax}`);
  });

  test('checking it as another platform names the mismatch', () => {
    expect(check('linux-arm64-gnu', hostBinary).problems).toEqual(['architecture is x86_64, want arm64']);
    expect(check('darwin-x64', hostBinary).problems).toEqual(['format is elf, want Mach-O 64-bit']);
    const musl = check('linux-x64-musl', hostBinary);
    expect(musl.ok).toBe(false);
    expect(musl.problems.join('\n')).toMatch(/links .*libc\.so\.6.*not a musl system library/);
    expect(musl.problems.join('\n')).toMatch(/musl binary that needs glibc versions/);
  });

  test('glibc versions compare numerically', () => {
    expect(compareVersions('2.2.5', '2.17')).toBeLessThan(0);
    expect(compareVersions('2.17', '2.17')).toBe(0);
    expect(compareVersions('2.28', '2.17')).toBeGreaterThan(0);
  });
});

describe('Mach-O parser on hand-made dylibs', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-helper-macho-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  /** Packs 'x.y.z' as xxxx.yy.zz nibbles, the way load commands store versions. */
  const packVersion = (v) => {
    const [major, minor = 0, patch = 0] = v.split('.').map(Number);
    return (major << 16) | (minor << 8) | patch;
  };

  /**
   * The smallest dylib the parser needs: a header, LC_BUILD_VERSION, one
   * LC_LOAD_DYLIB per library, an exports trie and LC_SYMTAB.
   */
  function machO({ cputype = 0x01000007, minOs = '10.13', dylibs = ['/usr/lib/libSystem.B.dylib'], exported = true }) {
    const name = '_napi_register_module_v1';
    const commands = [];
    const u32s = (...values) => {
      const b = Buffer.alloc(values.length * 4);
      for (const [i, v] of values.entries()) b.writeUInt32LE(v >>> 0, i * 4);
      return b;
    };
    commands.push(u32s(0x32, 24, 1, packVersion(minOs), packVersion('14.0'), 0));
    for (const lib of dylibs) {
      const size = Math.ceil((24 + lib.length + 1) / 8) * 8;
      const cmd = Buffer.alloc(size);
      u32s(0xc, size, 24, 2, 0x10000, 0x10000).copy(cmd);
      cmd.write(lib, 24, 'latin1');
      commands.push(cmd);
    }
    const headerAndCommandsSize = 32 + commands.reduce((n, c) => n + c.length, 0) + 16 + 24;
    // Trie: a root with one edge labelled with the whole name, to a terminal
    // node with flags 0 and address 0x1000.
    const trie = exported
      ? Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${name}\0`, 'latin1'), Buffer.from([28, 3, 0, 0x80, 0x20, 0])])
      : Buffer.from([0, 0]);
    const trieOff = headerAndCommandsSize;
    const symOff = Math.ceil((trieOff + trie.length) / 8) * 8;
    const symbol = Buffer.alloc(16);
    symbol.writeUInt32LE(1, 0); // n_strx
    symbol[4] = exported ? 0x0f : 0x0e; // N_SECT, with N_EXT when exported
    symbol[5] = 1;
    symbol.writeBigUInt64LE(0x1000n, 8);
    const strings = Buffer.from(`\0${name}\0`, 'latin1');
    const strOff = symOff + 16;
    commands.push(u32s(0x80000033, 16, trieOff, trie.length));
    commands.push(u32s(0x2, 24, symOff, 1, strOff, strings.length));
    const sizeofcmds = commands.reduce((n, c) => n + c.length, 0);
    const header = u32s(0xfeedfacf, cputype, 3, 6, commands.length, sizeofcmds, 0x100085, 0);
    const file = Buffer.alloc(strOff + strings.length);
    Buffer.concat([header, ...commands]).copy(file);
    trie.copy(file, trieOff);
    symbol.copy(file, symOff);
    strings.copy(file, strOff);
    const out = path.join(work, `${fs.readdirSync(work).length}.dylib`);
    fs.writeFileSync(out, file);
    return out;
  }

  test('reads architecture, minimum macOS, libraries, symbols and the exports trie', () => {
    const info = inspect(machO({}));
    expect(info).toMatchObject({
      format: 'macho',
      arch: 'x86_64',
      minOs: '10.13',
      minOsSource: 'LC_BUILD_VERSION',
      sdk: '14.0',
      needed: ['/usr/lib/libSystem.B.dylib'],
      registerInSymtab: true,
      registerInTrie: true,
      exportsRegister: true,
      symbols: { total: 1, external: 1, local: 0, undefined: 0 },
    });
    expect(check('darwin-x64', machO({})).problems).toEqual([]);
  });

  test('fails a newer minimum macOS, libc++, a missing export and a missing signature on arm64', () => {
    expect(check('darwin-x64', machO({ minOs: '12.0' })).problems).toEqual(['needs macOS 12.0, want at most 10.13']);
    const cxx = check('darwin-x64', machO({ dylibs: ['/usr/lib/libSystem.B.dylib', '/usr/lib/libc++.1.dylib'] }));
    expect(cxx.problems).toEqual(['links /usr/lib/libc++.1.dylib: only /usr/lib/libSystem.B.dylib is allowed']);
    expect(check('darwin-x64', machO({ exported: false })).problems).toEqual([
      'does not export napi_register_module_v1: Node cannot load it as an addon',
    ]);
    const arm = check('darwin-arm64', machO({ cputype: 0x0100000c, minOs: '11.0' }));
    expect(arm.problems).toEqual(['no code signature: macOS on Apple silicon refuses unsigned arm64 code']);
    expect(check('darwin-arm64', machO({})).problems).toEqual(['architecture is x86_64, want arm64']);
  });

  test('a truncated file is a problem, not a crash', () => {
    const whole = fs.readFileSync(machO({}));
    const cut = path.join(work, 'cut.dylib');
    fs.writeFileSync(cut, whole.subarray(0, 100));
    const result = check('darwin-x64', cut);
    expect(result.ok).toBe(false);
    expect(result.problems[0]).toMatch(/^cannot parse: .*beyond the end of the file/);
  });
});
