/** The fieldmesh release this build belongs to. */
export const VERSION = '0.1.0';
