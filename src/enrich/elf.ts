/**
 * elf.ts — the few facts Sidelight reads from an executable: its section names, to tell a
 * Go binary (section .go.buildinfo) from others. Reads only the ELF header, the section
 * header table and the section-name string table, with every size bounded; returns
 * undefined for anything that is not a readable 64-bit little-endian ELF file.
 * Synchronous; called once per process (results cached by the process cache).
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
