/**
 * semconv.ts — incubating semantic-convention keys Sidelight uses, copied here as the
 * @opentelemetry/semantic-conventions README advises (stable keys are imported from the
 * package itself). One place to update when a key is renamed or stabilised.
 */
export const ATTR_PROCESS_PID = 'process.pid';
export const ATTR_PROCESS_EXECUTABLE_NAME = 'process.executable.name';
export const ATTR_PROCESS_EXECUTABLE_PATH = 'process.executable.path';
export const ATTR_HOST_NAME = 'host.name';
export const ATTR_CONTAINER_ID = 'container.id';
