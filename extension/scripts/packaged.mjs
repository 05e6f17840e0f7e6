// What goes into the .xpi: the one list both the build and the lint use.
export const PACKAGED = ["manifest.json", "_locales", "background", "popup", "options", "lib", "icons", "experiments"];
