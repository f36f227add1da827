// A test-only bcryptprimitives.dll for the Wine prefix of the Windows test
// (scripts/platform-runtimes.js windows builds it there): Rust's standard
// library gets its random bytes from ProcessPrng, which every Windows 10+
// has and Wine 8 lacks, so without it the addon fails to load under Wine.
// This stands in for it with RtlGenRandom (advapi32's SystemFunction036),
// also the OS random source. It is never shipped: the packages carry only
// the addon, and real Windows has its own ProcessPrng.

#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/** Fills `data` with `length` random bytes; like Windows' own, it always succeeds. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  while (length > 0) {
    // RtlGenRandom takes a ULONG: a larger request goes in pieces.
    ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    length -= chunk;
  }
  return TRUE;
}
