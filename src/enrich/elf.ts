/**
 * elf.ts — the few facts Sidelight reads from an executable: its section names, to tell a
 * Go binary (section .go.buildinfo) from others. Reads only the ELF header, the section
 * header table and the section-name string table, with every size bounded; returns
 * undefined for anything that is not a readable 64-bit little-endian ELF file.
 * Synchronous; called once per process (results cached by the process cache). Also: which
 * functions an ELF file exports in .dynsym (OpenSSL users, src/receiver/tls.ts; cached there).
 */
import { closeSync, openSync, readSync } from 'node:fs';

const MAX_SECTIONS = 4096;
const MAX_SHSTRTAB = 1 << 20;

function readAt(fd: number, len: number, pos: number): Buffer | undefined {
  const b = Buffer.alloc(len);
  return readSync(fd, b, 0, len, pos) === len ? b : undefined;
}

export function elfSectionNames(path: string): string[] | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const h = readAt(fd, 64, 0);
    if (!h || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return undefined; // ELF64, LE
    const shoff = Number(h.readBigUInt64LE(0x28));
    const shentsize = h.readUInt16LE(0x3a);
    const shnum = h.readUInt16LE(0x3c);
    const shstrndx = h.readUInt16LE(0x3e);
    if (shentsize < 64 || shnum === 0 || shnum > MAX_SECTIONS || shstrndx >= shnum) return undefined;
    const table = readAt(fd, shentsize * shnum, shoff);
    if (!table) return undefined;
    const strOff = Number(table.readBigUInt64LE(shstrndx * shentsize + 0x18));
    const strSize = Number(table.readBigUInt64LE(shstrndx * shentsize + 0x20));
    if (strSize === 0 || strSize > MAX_SHSTRTAB) return undefined;
    const strs = readAt(fd, strSize, strOff);
    if (!strs) return undefined;
    const names: string[] = [];
    for (let i = 0; i < shnum; i++) {
      const nameOff = table.readUInt32LE(i * shentsize);
      if (nameOff >= strs.length) continue;
      const end = strs.indexOf(0, nameOff);
      names.push(strs.toString('latin1', nameOff, end < 0 ? strs.length : end));
    }
    return names;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** A Go binary: its goroutines move between OS threads. */
export function isGoBinary(path: string): boolean {
  return elfSectionNames(path)?.includes('.go.buildinfo') ?? false;
}

const MAX_DYNSYM = 64 << 20;
const SHT_DYNSYM = 11;
const STT_FUNC = 2;
const STT_GNU_IFUNC = 10;

/**
 * Which of `names` the ELF file defines as functions in its dynamic symbol table (.dynsym:
 * what a shared library, or an executable built with exported symbols like Node, offers).
 * undefined when the file is not a readable 64-bit little-endian ELF file; bounded reads.
 */
export function elfDynamicFunctions(path: string, names: readonly string[]): Set<string> | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const h = readAt(fd, 64, 0);
    if (!h || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return undefined;
    const shoff = Number(h.readBigUInt64LE(0x28));
    const shentsize = h.readUInt16LE(0x3a);
    const shnum = h.readUInt16LE(0x3c);
    if (shentsize < 64 || shnum === 0 || shnum > MAX_SECTIONS) return undefined;
    const table = readAt(fd, shentsize * shnum, shoff);
    if (!table) return undefined;
    const found = new Set<string>();
    const wanted = new Set(names);
    for (let i = 0; i < shnum; i++) {
      const base = i * shentsize;
      if (table.readUInt32LE(base + 4) !== SHT_DYNSYM) continue;
      const symOff = Number(table.readBigUInt64LE(base + 0x18));
      const symSize = Number(table.readBigUInt64LE(base + 0x20));
      const link = table.readUInt32LE(base + 0x28);
      const entSize = Number(table.readBigUInt64LE(base + 0x38)) || 24;
      if (link >= shnum || symSize > MAX_DYNSYM || entSize < 24) return undefined;
      const strOff = Number(table.readBigUInt64LE(link * shentsize + 0x18));
      const strSize = Number(table.readBigUInt64LE(link * shentsize + 0x20));
      if (strSize > MAX_DYNSYM) return undefined;
      const syms = readAt(fd, symSize, symOff);
      const strs = readAt(fd, strSize, strOff);
      if (!syms || !strs) return undefined;
      for (let s = 0; s + 24 <= syms.length; s += entSize) {
        const type = syms[s + 4]! & 0xf;
        if ((type !== STT_FUNC && type !== STT_GNU_IFUNC) || syms.readUInt16LE(s + 6) === 0) continue;
        const nameOff = syms.readUInt32LE(s);
        if (nameOff >= strs.length) continue;
        const end = strs.indexOf(0, nameOff);
        const name = strs.toString('latin1', nameOff, end < 0 ? strs.length : end);
        if (wanted.has(name)) found.add(name);
      }
    }
    return found;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}
