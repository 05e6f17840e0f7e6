// Packs the add-on's runtime files into dist/autocrypt-sma.xpi with no tool but Node.
// Usage: node scripts/build-xpi.mjs   (prints the .xpi path)
// Pure Node so a machine without `zip` can build it; fixed timestamps and sorted entries make the
// same sources give the same bytes.

import { readFileSync, readdirSync, statSync, mkdirSync, writeFileSync } from "node:fs";
import { join, relative, sep, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateRawSync } from "node:zlib";
import { PACKAGED } from "./packaged.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
// Only what Thunderbird loads (scripts/packaged.mjs): tests, scripts, package.json and node_modules stay out.
const DOS_DATE_1980_01_01 = (0 << 9) | (1 << 5) | 1;

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function listFiles(path) {
  if (statSync(path).isFile()) return [path];
  return readdirSync(path).sort().flatMap((name) => listFiles(join(path, name)));
}

function zipEntries(files) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const { name, data } of files) {
    const nameBuf = Buffer.from(name, "utf8");
    const packed = deflateRawSync(data, { level: 9 });
    const crc = crc32(data);
    const header = (signature, extra) => {
      const b = Buffer.alloc(extra);
      b.writeUInt32LE(signature, 0);
      return b;
    };
    const local = header(0x04034b50, 30);
    local.writeUInt16LE(20, 4); // version needed: deflate
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt16LE(8, 8); // method: deflate
    // time (offset 10) stays zero: with the fixed date it makes the output reproducible
    local.writeUInt16LE(DOS_DATE_1980_01_01, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);

    const central = header(0x02014b50, 46);
    central.writeUInt16LE(20, 4); // made by
    local.copy(central, 6, 4, 30); // same fields as the local header, from "version needed" on
    // comment length, disk number and file attributes stay zero
    central.writeUInt32LE(offset, 42);

    locals.push(local, nameBuf, packed);
    centrals.push(central, nameBuf);
    offset += local.length + nameBuf.length + packed.length;
  }
  const centralDir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(centralDir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, centralDir, end]);
}

// A manifest that does not parse would only fail at install time in Thunderbird; fail here instead.
JSON.parse(readFileSync(join(ROOT, "manifest.json"), "utf8"));
const files = PACKAGED.flatMap((entry) => listFiles(join(ROOT, entry))).map((path) => ({
  name: relative(ROOT, path).split(sep).join("/"),
  data: readFileSync(path),
}));
const outDir = join(ROOT, "dist");
const out = join(outDir, "autocrypt-sma.xpi"); // fixed name so lint and e2e tests can find it
mkdirSync(outDir, { recursive: true });
writeFileSync(out, zipEntries(files));
console.log(relative(process.cwd(), out) || out);
