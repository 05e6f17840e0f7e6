// The one-time pairing code as the user types it on the new device: checked here, so a typo is
// caught before anything goes to the host. The host shows codes as 417-209-3551: three digits
// naming the inviting device, seven secret ones; spaces and dashes do not matter.

export const CODE_DIGITS = 10;

/** The typed code in the host's own form, or the message key that says what is wrong with it. */
export function readCode(text) {
  const typed = String(text ?? "").trim();
  if (!typed) return { ok: false, errorKey: "codeErrorEmpty" };
  if (!/^[0-9\s-]+$/.test(typed)) return { ok: false, errorKey: "codeErrorCharacters" };
  const digits = typed.replace(/[\s-]/g, "");
  if (digits.length !== CODE_DIGITS) return { ok: false, errorKey: "codeErrorLength" };
  return { ok: true, code: formatCode(digits) };
}

/** 4172093551 -> 417-209-3551, the grouping both screens use. */
export function formatCode(digits) {
  return `${digits.slice(0, 3)}-${digits.slice(3, 6)}-${digits.slice(6)}`;
}
