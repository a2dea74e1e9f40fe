// Runs one Step Functions execution of a state machine definition in aws-local-stepfunctions
// (an independent ASL interpreter), each Task state answered by the product's own code in a
// process of its own, the way the AWS service integration would run it:
//
//   arn:aws:states:::glue:startJobRun.sync  ->  python -m purchases.aws.glue_job --JOB_NAME <JobName>
//       <the job's DefaultArguments, overridden by the resolved Parameters.Arguments>
//       A job run that exits non-zero is FAILED: States.TaskFailed, Cause = the JobRun as JSON.
//   arn:aws:states:::lambda:invoke          ->  python lambda_runtime.py <Handler>  (Payload on stdin)
//       The function's error is named by its errorType (Purchases.Transient, ...), Cause = the
//       Lambda error JSON; a process that dies is Runtime.ExitError, as the Lambda service says.
//
// Usage: node run_execution.mjs <config.json>   (the test writes the config; see
// tests/integration/test_state_machine.py). Prints one JSON document on stdout:
//   {"status": "SUCCEEDED"|"FAILED", "output", "error", "cause", "events": [...],
//    "invocations": [{"state", "attempt", "kind", "target", "parameters", "argv", "exitCode",
//                     "outcome", "stderr", "ms"}]}
// Config: {"definition", "input", "context", "python", "env" (every process),
//   "glueJobs": {JobName: {"DefaultArguments": {...}}},
//   "lambdaFunctions": {FunctionName or ARN: {"Handler": "purchases.aws.lambdas.x", "Environment": {...}}},
//   "injections": {stateName: {"<attempt>" or "*": {env of that attempt (every attempt)}}}}

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// aws-local-stepfunctions 3.0.0 calls Promise.withResolvers, which Node 20 lacks.
Promise.withResolvers ??= function withResolvers() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};
const { StateMachine } = await import('aws-local-stepfunctions');

const GLUE_SYNC = 'arn:aws:states:::glue:startJobRun.sync';
const LAMBDA_INVOKE = 'arn:aws:states:::lambda:invoke';
const HERE = dirname(fileURLToPath(import.meta.url));
const STDERR_KEPT = 4000;

if (process.argv.length !== 3) {
  process.stderr.write('usage: node run_execution.mjs <config.json>\n');
  process.exit(2);
}
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const invocations = [];
const attempts = {};

class TaskError extends Error {
  // The interpreter matches Retry/Catch on `name` and puts `message` in the Catch's Cause.
  constructor(name, cause) {
    super(typeof cause === 'string' ? cause : JSON.stringify(cause));
    this.name = name;
  }
}

function runProcess(argv, env, stdin) {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => { stdout += chunk; });
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    child.on('error', (error) => resolve({ code: 127, stdout, stderr: `${stderr}${error}` }));
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

function lastLine(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : '';
}

function processEnv(stateName, attempt, own) {
  const byAttempt = config.injections?.[stateName] ?? {};
  const injected = byAttempt[String(attempt)] ?? byAttempt['*'] ?? {};
  return { ...config.env, ...own, ...injected };
}

function record(stateName, attempt, kind, target, parameters, argv, done, outcome, started) {
  invocations.push({
    state: stateName, attempt, kind, target, parameters, argv, exitCode: done.code,
    outcome, stderr: done.stderr.slice(-STDERR_KEPT), ms: Date.now() - started,
  });
}

async function glueJobRun(stateName, attempt, parameters) {
  const jobName = parameters?.JobName;
  const job = config.glueJobs?.[jobName];
  if (!job) {
    throw new TaskError('Glue.EntityNotFoundException', { message: `Job ${jobName} not found` });
  }
  const args = { ...(job.DefaultArguments ?? {}), ...(parameters.Arguments ?? {}) };
  for (const [key, value] of Object.entries(parameters.Arguments ?? {})) {
    // StartJobRun's Arguments is a map of string to string.
    if (typeof value !== 'string') {
      throw new TaskError('Glue.InvalidInputException',
        { message: `Arguments ${key}: expected a string, got ${JSON.stringify(value)}` });
    }
  }
  const argv = [config.python, '-m', 'purchases.aws.glue_job', '--JOB_NAME', jobName];
  for (const [key, value] of Object.entries(args)) argv.push(key, value);
  const started = Date.now();
  const done = await runProcess(argv, processEnv(stateName, attempt, {}));
  const jobRun = {
    Id: `jr_${randomUUID().replace(/-/g, '')}`, JobName: jobName, Attempt: 0, Arguments: args,
    GlueVersion: '5.0', StartedOn: started, CompletedOn: Date.now(),
    ExecutionTime: Math.round((Date.now() - started) / 1000),
  };
  if (done.code === 0) {
    record(stateName, attempt, 'glue', jobName, parameters, argv, done, 'SUCCEEDED', started);
    return { ...jobRun, JobRunState: 'SUCCEEDED' };
  }
  record(stateName, attempt, 'glue', jobName, parameters, argv, done, 'FAILED', started);
  const message = lastLine(done.stderr) || `Command failed with exit code ${done.code}`;
  throw new TaskError('States.TaskFailed',
    { ...jobRun, JobRunState: 'FAILED', ErrorMessage: message });
}

async function lambdaInvoke(stateName, attempt, functionName, payload, parameters) {
  const fn = config.lambdaFunctions?.[functionName];
  if (!fn) {
    throw new TaskError('Lambda.ResourceNotFoundException',
      { message: `Function not found: ${functionName}` });
  }
  const requestId = randomUUID();
  const argv = [config.python, join(HERE, 'lambda_runtime.py'), fn.Handler];
  const env = processEnv(stateName, attempt, {
    AWS_LAMBDA_FUNCTION_NAME: String(functionName).split(':').pop(),
    AWS_LAMBDA_LOG_LEVEL: 'INFO',
    ...fn.Environment,
  });
  const started = Date.now();
  const done = await runProcess(argv, env, JSON.stringify(payload));
  let response = null;
  try {
    response = JSON.parse(lastLine(done.stdout));
  } catch {
    response = null;
  }
  if (done.code !== 0 || response === null) {
    record(stateName, attempt, 'lambda', functionName, parameters, argv, done, 'Runtime.ExitError',
      started);
    throw new TaskError('Runtime.ExitError', {
      errorType: 'Runtime.ExitError',
      errorMessage: `RequestId: ${requestId} Error: Runtime exited with error: exit status ${done.code}`,
    });
  }
  if ('errorType' in response) {
    record(stateName, attempt, 'lambda', functionName, parameters, argv, done, response.errorType,
      started);
    throw new TaskError(response.errorType, { ...response, requestId });
  }
  record(stateName, attempt, 'lambda', functionName, parameters, argv, done, 'SUCCEEDED', started);
  return response.result;
}

function handlerFor(stateName, state) {
  return async (input) => {
    attempts[stateName] = (attempts[stateName] ?? 0) + 1;
    const attempt = attempts[stateName];
    if (state.Resource === GLUE_SYNC) return glueJobRun(stateName, attempt, input);
    if (state.Resource === LAMBDA_INVOKE) {
      const result = await lambdaInvoke(stateName, attempt, input?.FunctionName, input?.Payload,
        input);
      // What the service integration returns: the function's result under Payload.
      return {
        ExecutedVersion: '$LATEST', Payload: result, StatusCode: 200,
        SdkHttpMetadata: { HttpStatusCode: 200 }, SdkResponseMetadata: { RequestId: randomUUID() },
      };
    }
    if (/^arn:aws:lambda:/.test(state.Resource)) {  // a function ARN as the resource itself
      return lambdaInvoke(stateName, attempt, state.Resource, input, input);
    }
    throw new TaskError('States.Runtime', { message: `no local handler for ${state.Resource}` });
  };
}

const handlers = {};
const retryIntervals = {};
for (const [name, state] of Object.entries(config.definition.States)) {
  if (state.Type !== 'Task') continue;
  handlers[name] = handlerFor(name, state);
  retryIntervals[name] = 0; // the test waits for no back-off; attempts are what it checks
}

const machine = new StateMachine(config.definition);
const execution = machine.run(config.input, {
  context: config.context ?? {},
  overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides: retryIntervals },
});
const events = [];
const collecting = (async () => {
  for await (const event of execution.eventLogs) events.push(event);
})();
const summary = { status: 'SUCCEEDED', output: null, error: null, cause: null };
try {
  summary.output = await execution.result;
} catch (error) {
  summary.status = 'FAILED';
  const failed = error?.cause ?? error;
  summary.error = failed?.name ?? String(error);
  summary.cause = failed?.message ?? null;
}
await collecting;
process.stdout.write(`${JSON.stringify({ ...summary, events, invocations })}\n`);
